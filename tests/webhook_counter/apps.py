import os

from django.apps import AppConfig


def record(sender, event, connections, **kwargs):
    line = f"{event.pk} {os.getpid()} {len(connections)}\n".encode()
    fd = os.open(os.environ["QB_CLUSTER_WEBHOOK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class WebhookCounterConfig(AppConfig):
    name = "tests.webhook_counter"
    label = "qb_tests_webhook_counter"

    def ready(self):
        from qb_oauth.signals import webhook_received

        webhook_received.connect(record, dispatch_uid="qb_tests_webhook_counter")
