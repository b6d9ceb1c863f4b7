"""How every client of ours connects to Kafka: kafka-python options and faust credentials, both
made from the one ``Settings`` so that plaintext, TLS and SASL_SSL (SCRAM) are set in one place.

The password comes from ``sasl_password`` (best set as MQSTREAM_SASL_PASSWORD) or from the file
named by ``sasl_password_file``; it is never logged (``Settings`` leaves it out of its repr and
faust's credentials show only the user name).
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust

from mqstream.config import Settings


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                               "security_protocol": settings.security_protocol}
    if settings.uses_tls:
        options.update(ssl_cafile=settings.ssl_cafile or None, ssl_certfile=settings.ssl_certfile or None,
                       ssl_keyfile=settings.ssl_keyfile or None, ssl_check_hostname=True)
    if settings.uses_sasl:
        options.update(sasl_mechanism=settings.sasl_mechanism, sasl_plain_username=settings.sasl_username,
                       sasl_plain_password=sasl_password(settings))
    return options


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """``broker_credentials`` for the faust app (aiokafka underneath); None for plaintext."""
    context = ssl_context(settings) if settings.uses_tls else None
    if settings.uses_sasl:
        return faust.SASLCredentials(username=settings.sasl_username, password=sasl_password(settings),
                                     mechanism=settings.sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context) if context is not None else None


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Server certificates checked against ``ssl_cafile`` (or the system's CAs), host names
    checked; a client certificate when one is configured (mutual TLS)."""
    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    return context


def sasl_password(settings: Settings) -> str:
    if settings.sasl_password_file:
        return Path(settings.sasl_password_file).read_text().strip()
    return settings.sasl_password
