"""Citation export: one document's reference, or several in one file, as BibTeX, RIS or
CSL-JSON (see :mod:`service.citation_export`), sent as a download."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from service.api.errors import ErrorResponse, api_error, invalid
from service.api.state import ready_engine
from service.citation_export import FORMAT_INFO, MAX_EXPORT_DOCUMENTS, CitationFormat, export
from service.documents import Document
from service.engine import Engine

citation_router = APIRouter(tags=["documents"])
EngineDep = Annotated[Engine, Depends(ready_engine)]
FormatQuery = Annotated[
    CitationFormat,
    Query(description="`bibtex` (.bib), `ris` (.ris) or `csl-json` (.json, CSL-JSON)."),
]

_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The reference file, as an attachment.",
        "content": {
            "application/x-bibtex": {"schema": {"type": "string"}},
            "application/x-research-info-systems": {"schema": {"type": "string"}},
            "application/vnd.citationstyles.csl+json": {  # an array of CSL items
                "schema": {"type": "array", "items": {"type": "object"}}
            },
        },
    },
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def content_disposition(filename: str) -> str:
    """``attachment; filename="..."``, with an RFC 6266 ``filename*`` for names beyond plain
    ASCII letters, digits, dots, dashes and underscores."""
    plain = _UNSAFE_FILENAME.sub("_", filename)
    if plain == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _download(docs: list[Document], fmt: CitationFormat, stem: str) -> Response:
    info = FORMAT_INFO[fmt]
    text = await run_in_threadpool(export, docs, fmt)  # 100 BibTeX entries: tens of ms
    return Response(
        content=text.encode("utf-8"),
        media_type=info.media_type,
        headers={"Content-Disposition": content_disposition(f"{stem}.{info.extension}")},
    )


@citation_router.get(
    "/api/documents/{document_id}/citation",
    response_class=Response,
    responses=_FILE_RESPONSES,
)
async def document_citation(
    document_id: str, engine: EngineDep, format: FormatQuery = "bibtex"
) -> Response:
    """One document's reference as a file to import into a reference manager."""
    doc = engine.data.documents.get(document_id)
    if doc is None:
        raise HTTPException(status_code=404, detail=f"no document with id '{document_id}'")
    return await _download([doc], format, document_id)


@citation_router.get(
    "/api/citations", response_class=Response, response_model=None, responses=_FILE_RESPONSES
)
async def citations(
    engine: EngineDep,
    document_ids: Annotated[
        list[str] | None,
        Query(
            description=(
                "The documents, repeated (`document_ids=a&document_ids=b`), at most "
                f"{MAX_EXPORT_DOCUMENTS}; kept in this order, repeats dropped."
            )
        ),
    ] = None,
    format: FormatQuery = "bibtex",
) -> Response | JSONResponse:
    """Several documents' references in one file (``references.bib``, ``.ris`` or ``.json``),
    e.g. every study an answer cites."""
    if not document_ids:
        return invalid("document_ids", "name at least one document")
    if len(document_ids) > MAX_EXPORT_DOCUMENTS:
        return invalid(
            "document_ids",
            f"at most {MAX_EXPORT_DOCUMENTS} documents per export (got {len(document_ids)})",
        )
    if any(not i for i in document_ids):
        return invalid("document_ids", "a document id must not be empty")
    wanted = list(dict.fromkeys(document_ids))
    known = engine.data.documents
    missing = [i for i in wanted if i not in known]
    if missing:
        names = ", ".join(f"'{i}'" for i in missing)
        noun = "document with id" if len(missing) == 1 else "documents with ids"
        details = [
            {"field": "document_ids", "message": f"no document with id '{i}'"} for i in missing
        ]
        return api_error(404, f"no {noun} {names}", details)
    return await _download([known[i] for i in wanted], format, "references")
