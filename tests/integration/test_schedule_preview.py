"""GET /schedules/preview: a cron's next fire times as the scheduler computes them, nothing stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar.testing import AsyncTestClient

from skiplock.queue.cron import Cron

Client = AsyncTestClient[Any]


async def test_preview_gives_the_next_fire_times_in_the_timezone(api: Client) -> None:
    response = await api.get(
        "/schedules/preview", params={"cron": "30 9 * * 1-5", "timezone": "Europe/Paris"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    upcoming = [datetime.fromisoformat(t) for t in body["upcoming"]]
    assert len(upcoming) == 5
    assert upcoming == sorted(upcoming)
    before_first = upcoming[0].replace(minute=29)
    assert upcoming == Cron("30 9 * * 1-5", "Europe/Paris").upcoming(before_first, 5)
    for moment in upcoming:
        local = moment.astimezone(Cron("@daily", "Europe/Paris").zone)
        assert (local.hour, local.minute) == (9, 30)
        assert local.weekday() < 5
    response = await api.get("/schedules/preview", params={"cron": "*/10 * * * * *", "count": "3"})
    assert [datetime.fromisoformat(t).second % 10 for t in response.json()["upcoming"]] == [0, 0, 0]
    assert all(s["cron"] != "30 9 * * 1-5" for s in (await api.get("/schedules")).json())  # none stored


async def test_a_bad_cron_timezone_or_count_is_a_422_naming_the_field(api: Client) -> None:
    for params, field in [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "@daily", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "@daily", "count": "0"}, "count"),
        ({"cron": "@daily", "count": "21"}, "count"),
        ({}, "cron"),
    ]:
        response = await api.get("/schedules/preview", params=params)
        assert response.status_code == 422, (params, response.text)
        assert field in response.text, (params, response.text)
