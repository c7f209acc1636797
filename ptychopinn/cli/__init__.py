"""Command-line entry point: `ptychopinn <command> ...`.

A thin layer over the Python API. Each subcommand lives in its own module
`ptychopinn/cli/<name>.py` exposing

    HELP: str                                   one-line summary
    def add_arguments(parser) -> None           flags (keep module imports light)
    def run(args) -> int                        calls one public function; returns an exit code

Errors derived from `ptychopinn.PtychoPINNError` (and file-system errors) are printed as one
line on stderr with exit code 2; no traceback. ConfigError messages name the command's flags
(`--neighbor-count`), not the config dataclass fields (`DataConfig.neighbor_count`):
`flag_message` rewrites them. A missing optional package is one line naming the `pip install`. `--config FILE` (TOML or YAML) supplies defaults
whose keys equal the long flag names (`batch-size` or `batch_size`).
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, PtychoPINNError
from ..io.extras import is_missing_extra, missing_extra_message
from ..io.host_memory import tune_host_allocator

# command name -> module under ptychopinn.cli (imported only when listed commands are built)
COMMANDS: dict[str, str] = {
    "simulate": "simulate",
    "train": "train",
    "reconstruct": "reconstruct",
    "demo": "demo",
    "convert": "convert",
    "export-onnx": "export_onnx",
    "bench": "bench",
}

EXIT_USAGE = 2


def _available_commands() -> dict[str, Any]:
    modules = {}
    for name, module_name in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:  # a command not built yet in this checkout
            if exc.name != f"{__name__}.{module_name}":
                raise
    return modules


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file of flag defaults."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib  # type: ignore[import-not-found]  # stdlib from 3.11 (mypy checks as 3.10)
            except ModuleNotFoundError:  # Python < 3.11
                import tomli as tomllib
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError as exc:
                raise ConfigError(f'{p}: YAML config needs PyYAML, which is not installed: pip install "ptychopinn[yaml]"') from exc
            with p.open("r", encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        else:
            raise ConfigError(f"{p}: config file must end in .toml, .yaml or .yml")
    except PtychoPINNError:
        raise
    except Exception as exc:  # parse errors from tomllib / yaml
        raise ConfigError(f"{p}: cannot parse config file: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: config file must hold a table of flag = value pairs")
    return data


def _apply_config_defaults(parser: argparse.ArgumentParser, path: str) -> None:
    values = load_config_file(path)
    dests = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    defaults = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in dests:
            raise ConfigError(f"{path}: unknown key {key!r} (keys are the command's long flag names)")
        defaults[dest] = value
    parser.set_defaults(**defaults)


def build_parser(modules: dict[str, Any] | None = None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    modules = _available_commands() if modules is None else modules
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="ptychopinn",
        description="Physics-informed neural ptychography (PyTorch).",
    )
    parser.add_argument("--version", action="version", version=f"ptychopinn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name, module in modules.items():
        sp = sub.add_parser(name, help=getattr(module, "HELP", ""), description=getattr(module, "HELP", None))
        sp.add_argument(
            "--config",
            metavar="FILE",
            help="TOML or YAML file of defaults; keys are this command's long flag names",
        )
        module.add_arguments(sp)
        sp.set_defaults(_module=module)
        subparsers[name] = sp
    return parser, subparsers


#: config-dataclass field -> flag destination, where the two names differ
FIELD_ALIASES = {"learning_rate": "lr", "object_kind": "object"}
_CONFIG_PREFIX = r"\b(?:Model|Data|Train|Simulation)Config"
_VALUE = r"""(?:=(?P<value>'[^']*'|"[^"]*"|[^\s,;)]+))?"""


def _flag_table(parser: argparse.ArgumentParser | None) -> tuple[dict[str, str], set[str]]:
    """({field or dest: '--flag'}, {dests of on/off flags}) of a subcommand's parser."""
    flags: dict[str, str] = {}
    switches: set[str] = set()
    for action in getattr(parser, "_actions", []):
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "config"):
            continue
        flags[action.dest] = longs[0]
        if action.nargs == 0:
            switches.add(action.dest)
    for field_name, dest in FIELD_ALIASES.items():
        if dest in flags:
            flags[field_name] = flags[dest]
    return flags, switches


def flag_message(message: str, parser: argparse.ArgumentParser | None) -> str:
    """`message` with config-field names of the command's flags written as those flags.

    'TrainConfig.batch_size must be >= 1' → '--batch-size must be >= 1'; 'resume=True' →
    '--resume'; "amp='bf16'" → '--amp bf16'; 'device: ...' → '--device: ...'. Names that are
    not flags of this command are left as they are.
    """
    flags, switches = _flag_table(parser)
    if not flags:
        return message

    def as_flag(field_name: str, value: str | None, original: str) -> str:
        flag = flags.get(field_name)
        if flag is None:
            return original
        if value is None:
            return flag
        v = value.strip("'\"")
        if field_name in switches:
            return flag if v == "True" else f"no {flag}"
        return f"{flag} {v}"

    text = re.sub(rf"^{_CONFIG_PREFIX}: ", "", message)
    text = re.sub(rf"{_CONFIG_PREFIX}\.(?P<field>\w+){_VALUE}", lambda m: as_flag(m["field"], m["value"], m[0]), text)
    # field_with_underscores[=value] and bare_field=value, not inside paths or other words
    text = re.sub(rf"(?<![\w./-])(?P<field>[a-z][a-z0-9]*_[a-z0-9_]+){_VALUE}(?![\w/-])",
                  lambda m: as_flag(m["field"], m["value"], m[0]), text)
    text = re.sub(r"""(?<![\w./-])(?P<field>[a-z][a-z0-9]*)=(?P<value>'[^']*'|"[^"]*"|[^\s,;)]+)""",
                  lambda m: as_flag(m["field"], m["value"], m[0]), text)
    # a message that starts with the field: 'device: ...', 'crop must be ...'
    text = re.sub(r"^(?P<field>[a-z][a-z0-9_]*)(?=: | must\b)", lambda m: as_flag(m["field"], None, m[0]), text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tune_host_allocator()  # reuse freed host memory: no page faults per batch (io/host_memory.py)
    command_parser: argparse.ArgumentParser | None = None
    try:
        parser, subparsers = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        command_parser = subparsers[args.command]
        if getattr(args, "config", None):
            sp = subparsers[args.command]
            _apply_config_defaults(sp, args.config)
            args = parser.parse_args(argv)  # flags on the command line still win
        return int(args._module.run(args) or 0)
    except ConfigError as exc:
        _fail(flag_message(str(exc), command_parser))
        return EXIT_USAGE
    except PtychoPINNError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        if not is_missing_extra(exc):
            raise
        _fail(missing_extra_message(exc))
        return EXIT_USAGE
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        name = exc.filename if exc.filename is not None else ""
        _fail(f"{name}: {exc.strerror or exc}" if name else str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130


def _fail(message: str) -> None:
    line = " ".join(str(message).split())  # one line, always
    print(f"ptychopinn: error: {line}", file=sys.stderr)


__all__ = ["main", "build_parser", "load_config_file", "flag_message", "COMMANDS"]
