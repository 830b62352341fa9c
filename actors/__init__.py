"""What runs inside Ray actors: the batch queue, the workers, the result aggregator.

Each actor is a plain class that tests drive without Ray; `ray.remote` is applied where the
actor is placed (see sut/cluster.py).
"""
