"""What runs inside Ray actors: the workers and their backends.

Each actor is a plain class that tests drive without Ray; `ray.remote` is applied where the
actor is placed (see sut/cluster.py).
"""
