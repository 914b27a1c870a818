"""Opens and clicks: the tracking views, verdicts, repeat caps, recording and the buffer."""
