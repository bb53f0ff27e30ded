"""Scale-out on Ray: a collection split into shards by id hash, each an ordinary collection served by Ray actors.

`ShardedCollection` has `Collection`'s methods: a search scatters to every shard (each runs the same plan or
target), the driver merges the global top-k and sums the cost; one transform and one set of trained index
parts (centroids, codebooks, projections), fitted once on a sample, are shared by every shard, so their
results compare. Importing this package imports Ray; `import matsearch` does not.
"""

from .cluster import connect
from .merge import ShardedResult
from .pool import ShardUnavailableError
from .sharded import ShardedCollection, is_sharded

__all__ = ["ShardUnavailableError", "ShardedCollection", "ShardedResult", "connect", "is_sharded"]
