"""matsearch: elastic, adaptive semantic search over Matryoshka embeddings."""

from .collection import Collection, Record
from .encoder import DEFAULT_MODEL, Encoder
from .errors import CollectionError, InvalidInputError, MatsearchError
from .matryoshka import truncate
from .plan import Plan, Stage
from .results import Cost, SearchResult
from .search import run_plan
from .store import BlockStore

__all__ = [
    "BlockStore", "Collection", "CollectionError", "Cost", "DEFAULT_MODEL", "Encoder", "InvalidInputError",
    "MatsearchError", "Plan", "Record", "SearchResult", "Stage", "run_plan", "truncate",
]
__version__ = "0.1.0"
