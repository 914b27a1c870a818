"""Template benchmark: what a campaign start spends on one HTML body (parse, link tracking,
Handlebars for SES) and one local rendering, for a realistic newsletter and hostile shapes, at
growing sizes up to the limit. Linear work shows as a flat µs/kB column.

    .venv/bin/python bench/templates.py            # a table, then one JSON line
    .venv/bin/python bench/templates.py --repeat 5

No database or Django: templates_app.language and .instrument only.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from templates_app.handlebars import to_handlebars  # noqa: E402
from templates_app.instrument import instrument_html  # noqa: E402
from templates_app.language import MAX_BODY_BYTES, TemplateSyntaxError, parse  # noqa: E402
from templates_app.render import render  # noqa: E402

BLOCK = (
    '<tr><td style="padding:8px;font-family:Arial"><a href="https://shop.example/p/{i}?utm=nl">'
    '<img src="https://cdn.example/{i}.jpg" alt="" width="200"></a><p>Hi {{{{ first_name | '
    'default: "there" }}}}, {{% if vip %}}your VIP price{{% else %}}our price{{% endif %}}.</p>'
    "</td></tr>\n"
)

SHAPES = {
    "newsletter": lambda n: "".join(BLOCK.format(i=i % 80) for i in range(n // len(BLOCK))),
    "unclosed <a x": lambda n: "<a x" * (n // 4),
    # one line of blocks, each with blanks only: every tag is checked for a guard comment
    "block tags on one line": lambda n: ("{% if a %}" + " " * 100 + "{% endif %}") * (n // 121),
    "one huge link": lambda n: '<a href="https://x.example/' + "a" * (n - 40) + '">x</a>',
    "same link repeated": lambda n: '<a href="https://x.example/">x</a>' * (n // 34),
}

SIZES_KB = (25, 50, 100, 200)


def measure(source: str, repeat: int) -> float | None:
    """Best seconds of `repeat` runs; None if the source is refused."""
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            nodes, _ = instrument_html(parse(source), base_url="https://t.example")
        except TemplateSyntaxError:
            return None
        to_handlebars(nodes, html=True)
        render(nodes, {"_t": "TOK", "first_name": "Ana", "vip": "1"}, html=True)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {}
    print(f"{'shape':24} {'kB':>4} {'ms':>9} {'µs/kB':>7}")
    for name, make in SHAPES.items():
        for kb in SIZES_KB:
            size = min(kb * 1024, MAX_BODY_BYTES - 64)
            seconds = measure(make(size), args.repeat)
            if seconds is None:
                print(f"{name:24} {kb:4} {'refused':>9}")
                continue
            results[f"{name} {kb} kB ms"] = round(seconds * 1000, 2)
            print(f"{name:24} {kb:4} {seconds * 1000:9.2f} {seconds * 1e6 / kb:7.0f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
