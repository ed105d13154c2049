"""``avperception-train``: the training package's command line."""

from __future__ import annotations

import argparse
import sys


def cmd_info(args: argparse.Namespace) -> int:
    import avperception_train
    from avperception.config import array_presets

    print(f"avperception-train {avperception_train.__version__}")
    print("arrays:", ", ".join(array_presets()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="avperception-train", description="avperception training tools")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions and available arrays")
    p.set_defaults(func=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
