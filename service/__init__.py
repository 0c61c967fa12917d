"""Cited question answering over research summaries on mesenchymal stem cell therapy.

Data flow, one module per step:
``documents`` (corpus files -> Document) -> ``chunking`` (Document -> Chunk) ->
``index_store`` (Chunks -> FAISS + BM25 on disk) -> ``retrieval`` (question -> Hits) ->
``answering`` (Hits -> cited Answer) -> ``api`` / ``static`` (HTTP and the chat page).
"""

__version__ = "0.1.0"
