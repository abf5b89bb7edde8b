"""Print what `rhapsody.platforms.detect()` sees of the allocation it runs in, as one JSON line."""

import json

import attrs

from rhapsody.platforms import detect

found = detect()
print(json.dumps({**attrs.asdict(found), "total_cores": found.total_cores}))
