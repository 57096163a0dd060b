"""A receiver of ``webhook_received`` for the processes test_webhooks_cluster.py starts.

Installed by tests/cluster_settings.py when ``QB_CLUSTER_WEBHOOK_LOG`` names a file:
every signal appends one line ``<event pk> <pid>`` to it (one small O_APPEND write,
so the lines of concurrent workers never mix).
"""
