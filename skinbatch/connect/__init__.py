"""How every command reaches Triton and Kafka: one endpoint parser, one set of connection options.

* :mod:`.triton`: ``grpc://``, ``grpcs://``, ``http://``, ``https://`` and bare ``host[:port]`` URLs,
  and Triton's TLS files (pure);
* :mod:`.kafka`: Kafka's security settings as kafka-python keyword arguments, the compression codecs,
  and a start-up probe that tells a refused connection, a TLS failure and refused credentials apart;
* :mod:`.options`: the click options (and ``SKINBATCH_*`` environment variables) every command shares.
"""

from .kafka import CODECS, KafkaConnection, check_codecs, probe_kafka
from .triton import ACCEPTED_FORMS, TritonEndpoint, TritonTLS, parse_triton_url

__all__ = [
    "ACCEPTED_FORMS",
    "CODECS",
    "KafkaConnection",
    "TritonEndpoint",
    "TritonTLS",
    "check_codecs",
    "parse_triton_url",
    "probe_kafka",
]
