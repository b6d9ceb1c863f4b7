import pytest

from mqstream.config import ConfigError, load_settings
from mqstream.models.seasonal_naive import SeasonalNaive
from mqstream.streams.worker import build_app


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("MQSTREAM_PARTITIONS", "8")
    monkeypatch.setenv("MQSTREAM_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    settings = load_settings()
    assert settings.partitions == 8 and not settings.uses_local_broker


def test_a_bad_setting_is_named_with_the_values_it_accepts(monkeypatch):
    monkeypatch.setenv("MQSTREAM_MODEL", "prophet")
    with pytest.raises(ConfigError, match="'model'.*seasonal-naive, mqcnn, mqtransformer"):
        load_settings()


def test_a_config_file_with_an_unknown_setting_is_refused(tmp_path):
    path = tmp_path / "mqstream.toml"
    path.write_text('partitions = 2\nparitions = 3\n')
    with pytest.raises(ConfigError, match="unknown settings \\['paritions'\\]"):
        load_settings(str(path))


def test_a_config_file_value_of_the_wrong_type_is_refused(tmp_path):
    path = tmp_path / "mqstream.toml"
    path.write_text('partitions = "four"\n')
    with pytest.raises(ConfigError, match="'partitions': expected int"):
        load_settings(str(path))


def test_standby_replicas_are_counted_from_zero(monkeypatch):
    monkeypatch.setenv("MQSTREAM_STANDBY_REPLICAS", "-1")
    with pytest.raises(ConfigError, match="'standby_replicas'.*0..8"):
        load_settings()
    monkeypatch.setenv("MQSTREAM_STANDBY_REPLICAS", "0")
    assert load_settings().standby_replicas == 0


def test_the_period_and_the_weeks_first_day_are_validated(monkeypatch):
    monkeypatch.setenv("MQSTREAM_PERIOD", "week")
    monkeypatch.setenv("MQSTREAM_WEEK_START", "sunday")
    settings = load_settings()
    assert (settings.cadence.period, settings.cadence.week_start, settings.cadence.iso(settings.cadence.of_iso(
        "2011-03-09"))) == ("week", 6, "2011-03-06")
    for name, value, says in (("period", "month", "day, week"), ("week_start", "funday", "monday, tuesday")):
        monkeypatch.setenv(f"MQSTREAM_{name.upper()}", value)
        with pytest.raises(ConfigError, match=f"setting '{name}': accepted values are {says}"):
            load_settings()
        monkeypatch.delenv(f"MQSTREAM_{name.upper()}")


def test_the_time_a_batch_may_take_and_its_size_reach_the_worker_app(monkeypatch, tmp_path):
    monkeypatch.setenv("MQSTREAM_MAX_POLL_INTERVAL", "30")
    with pytest.raises(ConfigError, match="'max_poll_interval'.*60..86400"):
        load_settings()
    monkeypatch.setenv("MQSTREAM_MAX_POLL_INTERVAL", "7200")
    monkeypatch.setenv("MQSTREAM_FETCH_BYTES", "1000")
    with pytest.raises(ConfigError, match="'fetch_bytes'.*1 to 256 MiB"):
        load_settings()
    monkeypatch.setenv("MQSTREAM_FETCH_BYTES", str(16 * 2**20))
    monkeypatch.setenv("MQSTREAM_DATA_DIR", str(tmp_path))
    settings = load_settings()
    app, _ = build_app(settings, SeasonalNaive())
    assert (app.conf.broker_max_poll_interval, app.conf.consumer_max_fetch_size) == (7200.0, 16 * 2**20)
