"""Submit `myapp.hello` and wait for its result: python submit.py BASE_URL API_KEY NAME"""

import json
import sys

from ordo import Client

base_url, api_key, name = sys.argv[1:4]
with Client(base_url, api_key=api_key) as ordo:
    submitted = ordo.submit("myapp.hello", {"name": name})
    task = ordo.wait(submitted.id, timeout=60)
    print(json.dumps({"id": task.id, "status": task.status, "result": task.result}))
