"""Command line for a shop's own order export: ``python -m companion <command>``.

Commands
--------
``validate ORDERS``
    Read and check an orders file (CSV or parquet) and summarise it.
``report ORDERS [-o report.md]``
    Cleaning report and retention numbers (repeat rate, cohort retention, churn).
``recommend ORDERS -o top_k.csv [-k 10] [--model blend]``
    Fit a recommender on every order and write the top ``k`` products per customer.
``churn ORDERS -o churn.csv [--horizon-days 90]``
    Score every customer's churn risk with BG/NBD and write it, riskiest first.
``serve ...``
    Serve recommendations over HTTP (provided by :mod:`companion.ops.serving`).

Every command takes ``--columns ours=theirs,...`` to map the file's column names onto the
companion's (see :mod:`companion.shop`) and ``--format csv|parquet`` when the suffix does
not tell; ``--encoding``, ``--delimiter`` and ``--decimal`` force what is otherwise
sniffed from a CSV file; ``--timezone`` is the zone timestamps with a UTC offset are
converted to (UTC by default); ``--returns`` says how the export marks refunds (``C``
invoices, negative quantities, or a status column named by ``--status-column`` with
the values of ``--refund-status``). Customer and product ids may be any text and come
out as given. Errors on bad input (unknown format, empty file, missing column, bad
dates or numbers) are one line on stderr naming the file, column, row and value, with
exit status 2; outputs are written to a temporary file and renamed, so nothing
half-written is left behind.

Parsing the command line imports nothing heavy (no pandas, no TensorFlow): ``--help`` is
instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from companion import __version__

EXIT_OK = 0
EXIT_BAD_INPUT = 2
SERVING_MODULE = "companion.ops.serving"
_RETURNS = ("cancel-prefix", "negative-quantity", "status-column")  # shop.RETURN_CONVENTIONS

_EPILOG = """\
column mapping: --columns customer_id=CustomerID,invoice_date=OrderDate,...
  companion columns: invoice, stock_code, quantity, invoice_date, price, customer_id
  (required), description, country (optional). Files in the UCI Online Retail schemas
  or with these names need no mapping.

returns: --returns cancel-prefix     invoices starting with C (UCI, the default)
         --returns negative-quantity negative quantities on ordinary orders
         --returns status-column --status-column Status --refund-status refunded,returned

examples:
  python -m companion validate orders.csv
  python -m companion validate export.csv --returns negative-quantity --timezone Europe/Paris
  python -m companion churn export.csv -o churn.csv --encoding latin-1 --delimiter ';'
  python -m companion report orders.parquet -o report.md
  python -m companion recommend orders.csv -o top10.csv -k 10
  python -m companion churn orders.csv -o churn.csv --horizon-days 90
"""


def _orders_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("orders", help="orders file: CSV (.csv, .csv.gz, .tsv) or parquet")
    parser.add_argument("--columns", metavar="OURS=THEIRS,...", default=None,
                        help="map the companion's column names onto the file's")
    parser.add_argument("--format", choices=("csv", "parquet"), default=None,
                        help="file format when the suffix does not tell")
    parser.add_argument("--encoding", default=None,
                        help="CSV encoding, e.g. utf-8 or latin-1 (default: sniffed)")
    parser.add_argument("--delimiter", default=None, metavar="CHAR",
                        help="CSV delimiter: , ; | or 'tab' (default: sniffed)")
    parser.add_argument("--decimal", choices=(".", ","), default=None, metavar="MARK",
                        help="decimal mark of numbers in a CSV file, '.' or ',' "
                             "(default: sniffed)")
    parser.add_argument("--timezone", default="UTC", metavar="ZONE",
                        help="convert timestamps with a UTC offset to this zone, an IANA "
                             "name such as Europe/London (default UTC)")
    parser.add_argument("--returns", choices=_RETURNS, default=None,
                        help="how refunds are marked: invoices starting with C (default), "
                             "negative quantities, or a status column")
    parser.add_argument("--status-column", default=None, metavar="COLUMN",
                        help="the file's status column (implies --returns status-column)")
    parser.add_argument("--refund-status", default="refunded", metavar="VALUE,...",
                        help="status values that mark a refund, case ignored "
                             "(default: refunded)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m companion`` (the ``serve`` options excepted)."""
    parser = argparse.ArgumentParser(
        prog="python -m companion",
        description="Retention tools for a shop's own order export: validate, report, "
                    "recommend, churn.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"companion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check an orders file and summarise it",
                       description="Check an orders file's columns, dates and numbers.")
    _orders_arguments(p)

    p = sub.add_parser("report", help="cleaning report and retention numbers",
                       description="Clean the orders and report retention (Markdown).")
    _orders_arguments(p)
    p.add_argument("-o", "--output", default=None,
                   help="write the report to this file (default: standard output)")
    p.add_argument("--horizon-days", type=int, default=90,
                   help="window for the observed churn rate (default 90)")

    p = sub.add_parser("recommend", help="top-k products per customer, to CSV",
                       description="Fit a recommender on all orders and write the top k "
                                   "products of every customer.")
    _orders_arguments(p)
    p.add_argument("-o", "--output", required=True, help="CSV file to write")
    p.add_argument("-k", type=int, default=10, help="products per customer (default 10)")
    p.add_argument("--model", default="blend",
                   choices=("blend", "tifu-knn", "item-knn", "repeat-buy", "popularity"),
                   help="recommender (default: blend = repeat-buy + item-kNN)")
    p.add_argument("--exclude-seen", action="store_true",
                   help="never recommend a product the customer already bought")

    p = sub.add_parser("churn", help="churn risk per customer (BG/NBD), to CSV",
                       description="Fit BG/NBD on all orders and write each customer's "
                                   "probability of no purchase in the horizon.")
    _orders_arguments(p)
    p.add_argument("-o", "--output", required=True, help="CSV file to write")
    p.add_argument("--horizon-days", type=int, default=90,
                   help="days ahead without a purchase that count as churn (default 90)")

    sub.add_parser("serve", help=f"serve recommendations over HTTP ({SERVING_MODULE})",
                   add_help=False)
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    """The ``serve`` parser, with options from :mod:`companion.ops.serving` (imported now)."""
    try:
        serving = importlib.import_module(SERVING_MODULE)
    except ModuleNotFoundError as err:
        if err.name != SERVING_MODULE:
            message = (f"{SERVING_MODULE} needs the package {err.name!r}, which is not "
                       "installed.")
        else:
            message = (f"this installation has no {SERVING_MODULE} module, so 'serve' is "
                       "not available.")
        print(f"python -m companion serve: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    parser = argparse.ArgumentParser(
        prog="python -m companion serve", description="Serve recommendations over HTTP.")
    serving.add_arguments(parser)
    parser.set_defaults(_run=serving.run)
    return parser


def _progress(args: argparse.Namespace, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr,
                disable=args.no_progress, leave=False)


def _load(args: argparse.Namespace, bar):
    from companion import shop

    columns = shop.parse_column_mapping(args.columns)
    returns = args.returns
    if args.status_column is not None:
        if returns not in (None, "status-column"):
            raise shop.OrdersFileError(
                f"--status-column goes with --returns status-column, not {returns}.")
        returns = "status-column"
    delimiter = args.delimiter
    if delimiter is not None and delimiter.lower() in ("tab", "\\t"):
        delimiter = "\t"
    bar.set_postfix_str("reading")
    orders = shop.load_orders(
        args.orders, columns=columns, fmt=args.format, encoding=args.encoding,
        delimiter=delimiter, decimal=args.decimal, timezone=args.timezone,
        returns=returns or "cancel-prefix",
        status_column=args.status_column,
        refund_status=[s for s in args.refund_status.split(",") if s.strip()])
    bar.update()
    return orders


def _load_clean(args: argparse.Namespace, bar):
    """The orders file read (:func:`_load`) and cleaned: ``(orders, cleaned lines,
    interactions)``, one step of the bar each."""
    from companion import shop

    orders = _load(args, bar)
    bar.set_postfix_str("cleaning")
    cleaned, interactions = shop.clean(orders)
    bar.update()
    return orders, cleaned, interactions


def _cmd_validate(args: argparse.Namespace) -> int:
    from companion import shop

    with _progress(args, 2, "validate") as bar:
        orders = _load(args, bar)
        result = shop.validate(orders, source=str(args.orders))
        bar.update()
    print(result.to_text())
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from companion import shop

    with _progress(args, 4, "report") as bar:
        _, cleaned, interactions = _load_clean(args, bar)
        bar.set_postfix_str("retention")
        summary = shop.retention_summary(interactions, horizon_days=args.horizon_days)
        text = shop.report_text(cleaned, summary, source=str(args.orders),
                                returns=shop.returns_summary(cleaned))
        bar.update()
        if args.output:
            shop.write_text(text, args.output)
        bar.update()
    if args.output:
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return EXIT_OK


def _cmd_recommend(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from companion import shop

    with _progress(args, 4, "recommend") as bar:
        orders, _, interactions = _load_clean(args, bar)
        bar.set_postfix_str(f"fitting {args.model}")

        def batches(it):
            return tqdm(it, desc="customers (batches)", file=sys.stderr,
                        disable=args.no_progress, leave=False)

        table = orders.customers.restore(shop.top_k(
            interactions, k=args.k, model=args.model, exclude_seen=args.exclude_seen,
            progress=batches))
        bar.update()
        shop.write_csv(table, args.output)
        bar.update()
    print(f"wrote {args.output}: top {args.k} products for "
          f"{table['customer_id'].nunique():,} customers ({args.model})", file=sys.stderr)
    return EXIT_OK


def _cmd_churn(args: argparse.Namespace) -> int:
    from companion import shop

    with _progress(args, 4, "churn") as bar:
        orders, _, interactions = _load_clean(args, bar)
        bar.set_postfix_str("fitting BG/NBD")
        table = orders.customers.restore(
            shop.churn_risk(interactions, horizon_days=args.horizon_days))
        bar.update()
        shop.write_csv(table, args.output)
        bar.update()
    print(f"wrote {args.output}: churn risk of {len(table):,} customers over "
          f"{args.horizon_days} days", file=sys.stderr)
    return EXIT_OK


_COMMANDS = {"validate": _cmd_validate, "report": _cmd_report,
             "recommend": _cmd_recommend, "churn": _cmd_churn}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m companion`` with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 2 on bad input (argparse's status for usage
    errors too), with a one-line message on stderr.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        args = _serve_parser().parse_args(argv[1:])
        return int(args._run(args) or 0)
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError) as err:
        message = str(err).strip() or type(err).__name__
        print(f"python -m companion {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
