#!/usr/bin/env python3
"""A real reflection client against the daemon, as grpcurl uses reflection (issue 16).

grpcurl is not packaged for Debian 12, so this is grpcio-reflection's client (PyPI, in
.venv-grpc): for server reflection v1alpha and v1 (grpcio-reflection's client speaks v1alpha; the
v1 service has the same messages under its stable name, so its stub is pointed at the v1 path),
list the services, resolve every one into a descriptor pool (grpc.health.v1.Health included),
then call methods from the reflected descriptors alone, as `grpcurl describe` / `grpcurl
... Method` do: Health/Check, Generation/GetModelInfo and Generation/Generate with n = 2.

Exit 77 (ctest: skipped) when grpcio-reflection, the model or the binary is absent. Environment:
LIGHTSERVE_BINARY, LIGHTSERVE_TEST_MODEL.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "support"))
from daemon_process import Daemon  # noqa: E402

try:
    import grpc
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
except ImportError as e:
    print("skipped: %s (scripts/test.sh installs grpcio-reflection in .venv-grpc)" % e)
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BINARY = os.environ.get("LIGHTSERVE_BINARY", os.path.join(ROOT, "build", "lightserve"))
MODEL = os.environ.get("LIGHTSERVE_TEST_MODEL",
                       os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
API_KEY = "reflection-key"


def reflection_database(channel, version):
    """grpcio-reflection's descriptor database, on the v1alpha or the v1 service."""
    database = ProtoReflectionDescriptorDatabase(channel)
    if version == "v1":
        database._stub.ServerReflectionInfo = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    return database


def call(channel, pool, method_name, fields, metadata=()):
    """A unary call built from reflected descriptors only (what grpcurl does)."""
    service_name, method = method_name.rsplit("/", 1)
    descriptor = pool.FindServiceByName(service_name).FindMethodByName(method)
    request_class = message_factory.GetMessageClass(descriptor.input_type)
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    stub = channel.unary_unary("/%s/%s" % (service_name, method),
                               request_serializer=request_class.SerializeToString,
                               response_deserializer=response_class.FromString)
    return stub(request_class(**fields), metadata=metadata, timeout=120)


class ReflectionClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(BINARY, MODEL, ["--kv-budget", "64MiB", "--context", "1024",
                                            "--http-port", "-1", "--grpc-port", "0",
                                            "--api-key", API_KEY])
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.daemon.port("grpc"))
        grpc.channel_ready_future(cls.channel).result(timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.daemon.stop()

    def check_version(self, version):
        database = reflection_database(self.channel, version)
        services = database.get_services()
        for name in ("lightserve.v1.Generation", "grpc.health.v1.Health",
                     "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(name, services, version)
        pool = descriptor_pool.DescriptorPool(database)
        for name in services:  # every listed service resolves: `grpcurl describe` works
            self.assertGreater(len(pool.FindServiceByName(name).methods), 0, name)
        health = pool.FindServiceByName("grpc.health.v1.Health")
        self.assertEqual(sorted(m.name for m in health.methods), ["Check", "Watch"])
        # `grpcurl ... grpc.health.v1.Health/Check`: SERVING (1), without the API key.
        for service in ("", "lightserve.v1.Generation"):
            reply = call(self.channel, pool, "grpc.health.v1.Health/Check", {"service": service})
            self.assertEqual(reply.status, 1, service)
        # The reflected GenerateRequest is the current contract: n is field 30.
        request = pool.FindMessageTypeByName("lightserve.v1.GenerateRequest")
        self.assertEqual(request.fields_by_name["n"].number, 30)
        key = (("authorization", "Bearer " + API_KEY),)
        info = call(self.channel, pool, "lightserve.v1.Generation/GetModelInfo", {}, key)
        self.assertEqual(info.name, os.path.splitext(os.path.basename(MODEL))[0])
        reply = call(self.channel, pool, "lightserve.v1.Generation/Generate",
                     {"text": "The capital of France is", "max_tokens": 4, "temperature": 0,
                      "n": 2}, key)
        self.assertEqual([c.index for c in reply.choices], [0, 1])
        self.assertEqual(reply.choices[0].text, reply.choices[1].text)  # greedy
        self.assertTrue(reply.system_fingerprint.startswith("fp_"))
        with self.assertRaises(grpc.RpcError) as e:
            call(self.channel, pool, "lightserve.v1.Generation/Generate",
                 {"text": "x", "model": "gpt-4"}, key)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_reflection_v1alpha(self):
        self.check_version("v1alpha")

    def test_reflection_v1(self):
        self.check_version("v1")


if __name__ == "__main__":
    if not os.path.exists(MODEL) or not os.path.exists(BINARY):
        print("skipped: model or binary absent: %s %s" % (MODEL, BINARY))
        sys.exit(77)
    unittest.main(verbosity=2)
