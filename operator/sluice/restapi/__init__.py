"""The REST API (`sluice api`): Feldera's pipeline endpoints over Pipeline resources.

decide.py is pure (Feldera's JSON, the /clear /start /stop rules); auth.py asks
Kubernetes who calls and what they may do; store.py reads and patches resources;
openapi.py turns the route table into the served document; app.py wires it with aiohttp.
"""
