"""The configuration table in docs/CONFIGURATION.md names every environment variable the code reads.

The product's packages (every top-level one but the tests and development tools) are read with
`ast`, not imported: a name counts wherever it is passed, as a literal, to one of config/env.py's
helpers or to `os.environ` / `os.getenv`. A name that is not a literal fails too, since nobody
could document it.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "CONFIGURATION.md"
ENV_MODULE = ROOT / "config" / "env.py"
# Every top-level package of the product is scanned (new ones too); these are not the product.
NOT_PRODUCT = {"tests", "seslocal", "bench", "scripts"}

# Documented, but read by others: boto3 (credentials, the endpoint) and docker-compose.yml
# (the passwords it puts into the app's URLs).
READ_ELSEWHERE = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL_SESV2",
    # The proxy variables: urllib.request.getproxies() (the lean SES client) and botocore.
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
}

_ENVIRON_METHODS = {"get", "setdefault", "pop"}
_NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")


def _env_helpers() -> set[str]:
    """config/env.py's functions that take a variable's name first (env_str, env_int, …)."""
    tree = ast.parse(ENV_MODULE.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.args.args and node.args.args[0].arg == "name"
    }


def _packages() -> list[Path]:
    return sorted(
        path.parent
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in NOT_PRODUCT and not path.parent.name.startswith(".")
    )


def _source_files() -> list[Path]:
    files = []
    for package in _packages():
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(ROOT).parts
            if "tests" in parts or path.name.startswith("test_") or path.name == "conftest.py":
                continue
            files.append(path)
    return files


def _is_os_environ(node: ast.expr, environ_aliases: set[str]) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id in environ_aliases


def _call_reads(
    func: ast.expr, helpers: set[str], environ_aliases: set[str], getenv_aliases: set[str]
) -> bool:
    """Whether a call with this callee reads the variable its first argument names."""
    if isinstance(func, ast.Name):
        return func.id in helpers or func.id in getenv_aliases
    if not isinstance(func, ast.Attribute):
        return False
    if func.attr in helpers:
        return True
    if func.attr in _ENVIRON_METHODS:
        return _is_os_environ(func.value, environ_aliases)
    return func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"


def _reads_in(path: Path, helpers: set[str], root: Path = ROOT) -> tuple[set[str], list[str]]:
    """The variable names `path` reads, and where it reads one that is not a literal."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # `from os import environ, getenv` makes bare names of them.
    environ_aliases: set[str] = set()
    getenv_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name == "environ":
                    environ_aliases.add(alias.asname or alias.name)
                elif alias.name == "getenv":
                    getenv_aliases.add(alias.asname or alias.name)

    names: set[str] = set()
    unnamed: list[str] = []
    forwarding = path == ENV_MODULE  # the helpers themselves pass `name` on

    def take(arg: ast.expr | None, node: ast.AST) -> None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.add(arg.value)
        elif not forwarding:
            unnamed.append(f"{path.relative_to(root)}:{node.lineno}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if _call_reads(node.func, helpers, environ_aliases, getenv_aliases):
                take(node.args[0] if node.args else None, node)
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value, environ_aliases):
            take(node.slice, node)
        elif isinstance(node, ast.Compare) and any(
            _is_os_environ(c, environ_aliases) for c in node.comparators
        ):
            take(node.left, node)
    return names, unnamed


def variables_read() -> tuple[set[str], list[str]]:
    helpers = _env_helpers()
    names: set[str] = set()
    unnamed: list[str] = []
    for path in _source_files():
        found, where = _reads_in(path, helpers)
        names |= found
        unnamed += where
    return names, unnamed


def variables_documented() -> set[str]:
    """Names in the first column of the tables whose first header cell is `variable`."""
    names: set[str] = set()
    in_table = False
    for line in TABLE.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first_cell = line.split("|")[1].strip()
        if first_cell == "variable":
            in_table = True
        elif in_table:
            names.update(_NAME.findall(first_cell))
    return names


def test_the_product_packages_are_scanned():
    assert {"config", "campaigns", "tracking", "templates_app"} <= {p.name for p in _packages()}


def test_the_helpers_are_found():
    # If config/env.py's helpers were renamed, the scan below would find nothing to check.
    assert {"env_str", "env_bool", "env_int", "env_list"} <= _env_helpers()


def test_every_variable_read_is_in_the_configuration_table():
    read, unnamed = variables_read()
    documented = variables_documented()
    assert not unnamed, f"environment variables read by a name that is not a literal: {unnamed}"
    assert {"DJANGO_SECRET_KEY", "TRACKING_BUFFER", "SES_CLIENT"} <= read  # the scan works
    missing = sorted(read - documented)
    assert not missing, f"read by the code, missing from docs/CONFIGURATION.md: {missing}"


def test_every_variable_in_the_table_is_read():
    read, _ = variables_read()
    documented = variables_documented()
    unread = sorted(documented - read - READ_ELSEWHERE)
    assert not unread, f"in docs/CONFIGURATION.md, read by nothing: {unread}"
    stale = sorted(READ_ELSEWHERE - documented)
    assert not stale, f"READ_ELSEWHERE names variables the table lacks: {stale}"


def test_the_scan_sees_every_way_of_reading(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "import os\n"
        "from os import environ as env\n"
        "from config.env import env_int\n"
        "A = os.environ.get('A')\n"
        "B = os.environ['B']\n"
        "C = os.getenv('C')\n"
        "D = env.get('D')\n"
        "E = env_int('E', 1)\n"
        "F = 'F' in os.environ\n"
        "os.environ.setdefault('G', 'x')\n"
        "H = os.environ.get(PREFIX + 'H')\n"
        "def wsgi(environ):\n"
        "    return environ.get('PATH_INFO')\n"
    )
    names, unnamed = _reads_in(source, {"env_int"}, root=tmp_path)
    assert names == {"A", "B", "C", "D", "E", "F", "G"}
    assert unnamed == ["example.py:11"]
