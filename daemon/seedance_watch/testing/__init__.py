"""Test doubles shipped with the daemon, public like structlog's ``testing`` module.

* :mod:`.memory`: :class:`~.memory.MemoryStore`, an in-memory job store (writer and
  reader), held to the store contract (``tests/test_store_contract.py``);
* :mod:`.provider`: :class:`~.provider.FakeProvider`, a scripted video provider,
  held to the provider contract (``tests/test_provider_contract.py``);
* :mod:`.s3emulator`: moto's S3 server on a free loopback port;
* :mod:`.pgserver`: a throwaway PostgreSQL server (Debian's binaries) on a free
  loopback port, for the suite and ``bench/cluster.py``.
"""
