"""Names that become paths in a dataset: splits and shards. One rule for the sources that
read split names from a list and for the layout that builds shard paths from them."""

import re

SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
SHARD_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}-\d{6}")
