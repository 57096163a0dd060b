"""The django-q2 schedule of the sweep: made at migrate, once, and kept in line with the setting."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from qb_oauth.schedule import SCHEDULE_NAME, TASK, ensure_schedule

pytestmark = pytest.mark.django_db


def ours():
    return Schedule.objects.filter(name=SCHEDULE_NAME)


@pytest.fixture(autouse=True)
def _as_after_migrate():
    # Transactional tests elsewhere flush every table, the schedule too.
    ensure_schedule()


def test_migrate_makes_the_schedule():
    ours().delete()
    call_command("migrate", verbosity=0)
    schedule = ours().get()
    assert schedule.func == TASK
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 15
    assert schedule.repeats == -1


def test_created_once_however_often_it_runs():
    ours().delete()
    first = ensure_schedule()
    for _ in range(3):
        ensure_schedule()
    call_command("migrate", verbosity=0)
    assert ours().count() == 1
    assert ours().get().pk == first.pk


def test_migrate_updates_it_when_the_setting_changes(settings):
    settings.QB_OAUTH = {**settings.QB_OAUTH, "SCHEDULE_MINUTES": 5}
    call_command("migrate", verbosity=0)
    assert ours().count() == 1
    assert ours().get().minutes == 5
    settings.QB_OAUTH = {**settings.QB_OAUTH, "SCHEDULE_MINUTES": 30}
    call_command("migrate", verbosity=0)
    assert ours().count() == 1
    assert ours().get().minutes == 30


def test_a_shorter_period_applies_now():
    Schedule.objects.filter(name=SCHEDULE_NAME).update(
        minutes=60, next_run=timezone.now() + timedelta(minutes=55)
    )
    schedule = ensure_schedule()
    assert schedule.minutes == 15
    assert schedule.next_run <= timezone.now() + timedelta(minutes=15)


def test_unchanged_schedule_keeps_its_next_run():
    later = timezone.now() + timedelta(minutes=12)
    ours().update(next_run=later)
    ensure_schedule()
    assert ours().get().next_run == later


def test_repairs_a_schedule_edited_by_hand():
    ours().update(func="something.else", schedule_type=Schedule.DAILY, repeats=3)
    schedule = ensure_schedule()
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
        TASK,
        Schedule.MINUTES,
        -1,
    )


def test_duplicates_are_folded_into_one():
    keep = ours().get()
    Schedule.objects.create(name=SCHEDULE_NAME, func=TASK, schedule_type=Schedule.MINUTES)
    Schedule.objects.create(name=SCHEDULE_NAME, func=TASK, schedule_type=Schedule.HOURLY)
    ensure_schedule()
    assert list(ours().values_list("pk", flat=True)) == [keep.pk]


def test_other_schedules_are_left_alone():
    other = Schedule.objects.create(name="site: something", func="x.y", minutes=3)
    ensure_schedule()
    other.refresh_from_db()
    assert (other.func, other.minutes) == ("x.y", 3)
