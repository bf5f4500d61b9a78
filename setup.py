from setuptools import find_packages, setup

setup(
    name="chateau",
    version="0.1.0",
    description="A WebSocket chat server for campuses and teams, on Twisted and Autobahn.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # "twisted.plugins" is listed by hand: find_packages cannot see it
    # because twisted/ and twisted/plugins/ have no __init__.py.
    packages=find_packages(include=["chateau", "chateau.*"]) + ["twisted.plugins"],
    package_data={
        "twisted.plugins": ["chateau_plugin.py"],
        "chateau": ["migrations/script.py.mako", "openapi.json"],
        "chateau.webclient": ["static/*.html", "static/*.js", "static/*.css"],
    },
    install_requires=[
        "twisted[tls]>=24.7",
        # The range chateau/frames.py was checked against (AUTOBAHN_RANGE there):
        # its direct frame paths use Autobahn internals.
        "autobahn>=25.9.1,<27",
        "sqlalchemy>=2.0",
        "bcrypt>=4.1",
        "ldap3>=2.9",
        "psycopg[binary]>=3.1",
        "alembic>=1.13",
        "prometheus_client>=0.17",
        # [cluster]: the Redis backplane (Twisted-native client, no threads).
        "txredisapi>=1.4",
        # Its C reply parser, which txredisapi uses when installed: the pure-Python
        # one hands each bulk string of a read on in a reactor turn of its own, so
        # messages forwarded together were fanned out (and written) one by one.
        "hiredis>=2",
        # The wire's JSON codec (chateau/messages.py): about a tenth of the
        # standard library's time per frame; json stays the fallback.
        "orjson>=3.9",
        # Names: the PRECIS username profile (RFC 8265) and Unicode's
        # confusables data for UTS #39 skeletons (chateau/names.py).
        "precis-i18n>=1.1,<2",
        "confusable-homoglyphs>=3.3,<4",
    ],
    entry_points={
        "console_scripts": [
            "chateau-admin=chateau.admin:main",
            "chateau-client=chateau.client.cli:run",
        ],
    },
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "websocket-client>=1.7",
            "pexpect>=4.8",
            "playwright>=1.40",
            "hypothesis>=6.100",
            # tests/test_bench_smoke.py runs the benchmark harness (bench/).
            "picows>=2.0",
            "uvloop>=0.19",
            "websockets>=14",
            "psutil>=5.9",
            # tests/test_http_api.py: a real HTTP client, and the OpenAPI document's validator.
            "requests>=2.31",
            "openapi-spec-validator>=0.7",
        ],
        # Profiling for bench/ (python -m bench.run --profile).
        "bench": ["picows>=2.0", "uvloop>=0.19", "websockets>=14", "psutil>=5.9", "py-spy>=0.3.14"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Communications :: Chat",
    ],
)
