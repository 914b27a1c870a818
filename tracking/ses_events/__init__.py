"""SES events: the SNS webhook, parsing, recording, pending events and the buffer."""
