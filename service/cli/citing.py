"""``cite``: print documents' references as BibTeX, RIS or CSL-JSON, read from the corpus
folder (no model or index needed; the same records as ``GET /api/citations``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.cli.common import CliError, add_common_options, settings_for

#: service.citation_export.FORMATS, written out so that ``--help`` imports nothing heavy.
FORMATS = ("bibtex", "ris", "csl-json")


def register(sub: Any) -> None:
    p = sub.add_parser("cite", help="print documents' references (BibTeX, RIS or CSL-JSON)")
    p.add_argument("document_ids", nargs="+", metavar="DOC_ID", help="document ids, in order")
    p.add_argument("--format", choices=FORMATS, default="bibtex", help="default: bibtex")
    add_common_options(p)
    p.set_defaults(func=cmd_cite)


def cmd_cite(args: argparse.Namespace) -> int:
    from service.citation_export import export
    from service.ingest import read_corpus

    settings = settings_for(args)
    documents = {d.id: d for d in read_corpus(settings).documents}
    wanted = list(dict.fromkeys(args.document_ids))
    missing = [i for i in wanted if i not in documents]
    if missing:
        names = ", ".join(f"'{i}'" for i in missing)
        known = ", ".join(sorted(documents)) or "none"
        raise CliError(f"no document with id {names} in {settings.corpus_dir} (ids: {known})")
    sys.stdout.write(export([documents[i] for i in wanted], args.format))
    return 0
