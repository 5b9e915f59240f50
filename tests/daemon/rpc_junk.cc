// rpc_junk: sends malformed and hostile requests to every method of belayd's two gRPC services
// (the worker link on TCP, the coordinator API on its Unix socket) and reports how each was
// answered. Used by belayd_test.py, which checks that belayd is still up and consistent after.
//
//   rpc_junk --worker 127.0.0.1:PORT --socket /path/belayd.sock [--token T] [--count N] [--seed S]
//
// Each request is one of: random bytes; a well-formed request message of the method's type with
// every field drawn at random (extreme integers, NaN and infinite doubles, long and binary
// strings, repeated fields, nested messages), carrying `--token` where the message has an
// attempt token (so handlers past the token check see it); that message truncated; that message
// with bytes flipped. Every call has a 1 s deadline. Prints one line per status code and exits 0
// once every call came back (with whatever status): a crash of belayd shows as UNAVAILABLE on
// the calls after it, which the caller checks separately.
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "belay/v1/coordinator.grpc.pb.h"
#include "belay/v1/worker.grpc.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "worker/runtime/coordinator_client.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

std::mt19937_64 rng;

int64_t Pick(std::initializer_list<int64_t> v) {
  return *(v.begin() + static_cast<std::ptrdiff_t>(rng() % v.size()));
}

int64_t RandomInt() {
  switch (rng() % 4) {
    case 0:
      return Pick({0, 1, -1, 2, 7, 100, 1000000});
    case 1:
      return Pick({std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
                   std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()});
    default:
      return static_cast<int64_t>(rng());
  }
}

double RandomDouble() {
  switch (rng() % 5) {
    case 0:
      return std::nan("");
    case 1:
      return std::numeric_limits<double>::infinity() * (rng() % 2 ? 1 : -1);
    case 2:
      return -1e308;
    default:
      return static_cast<double>(static_cast<int64_t>(rng() % 2000000) - 1000000) / 1000.0;
  }
}

std::string RandomBytes(size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// Text for `string` fields (proto3 parsers refuse invalid UTF-8 there, so binary text would
// never reach a handler); `bytes` fields get anything.
std::string RandomString(bool binary) {
  switch (rng() % 6) {
    case 0:
      return "";
    case 1:
      return std::string(1 + rng() % 70000, 'a');
    case 2:
      return Pick({0, 1}) ? "../../etc/passwd" : "/etc/shadow";
    case 3:
      return "step_000000001/rank_00000.bin\n\"{}";
    default: {
      if (binary) return RandomBytes(rng() % 200);
      std::string s(rng() % 200, ' ');
      for (char& c : s) c = static_cast<char>(1 + rng() % 126);
      return s;
    }
  }
}

void Fill(Message& m, const std::string& token, int depth) {
  const Descriptor* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->name() == "attempt_token" && !token.empty() && rng() % 8 != 0) {
      r->SetString(&m, f, token);
      continue;
    }
    if (rng() % 4 == 0) continue;  // leave it unset
    const int n = f->is_repeated() ? static_cast<int>(rng() % (rng() % 10 == 0 ? 3000 : 4)) : 1;
    for (int k = 0; k < n; ++k) {
      const bool rep = f->is_repeated();
      switch (f->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32: {
          const auto v = static_cast<int32_t>(RandomInt());
          rep ? r->AddInt32(&m, f, v) : r->SetInt32(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_INT64: {
          const int64_t v = RandomInt();
          rep ? r->AddInt64(&m, f, v) : r->SetInt64(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_UINT32: {
          const auto v = static_cast<uint32_t>(RandomInt());
          rep ? r->AddUInt32(&m, f, v) : r->SetUInt32(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_UINT64: {
          const auto v = static_cast<uint64_t>(RandomInt());
          rep ? r->AddUInt64(&m, f, v) : r->SetUInt64(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_DOUBLE: {
          const double v = RandomDouble();
          rep ? r->AddDouble(&m, f, v) : r->SetDouble(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_FLOAT: {
          const auto v = static_cast<float>(RandomDouble());
          rep ? r->AddFloat(&m, f, v) : r->SetFloat(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_BOOL: {
          const bool v = rng() % 2 != 0;
          rep ? r->AddBool(&m, f, v) : r->SetBool(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_ENUM: {
          const int v = rng() % 3 == 0
                            ? static_cast<int>(RandomInt() % 1000)
                            : f->enum_type()
                                  ->value(static_cast<int>(
                                      rng() % static_cast<uint64_t>(f->enum_type()->value_count())))
                                  ->number();
          rep ? r->AddEnumValue(&m, f, v) : r->SetEnumValue(&m, f, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_STRING: {
          std::string v = RandomString(f->type() == FieldDescriptor::TYPE_BYTES);
          rep ? r->AddString(&m, f, std::move(v)) : r->SetString(&m, f, std::move(v));
          break;
        }
        case FieldDescriptor::CPPTYPE_MESSAGE: {
          if (depth > 3) break;
          Message* sub = rep ? r->AddMessage(&m, f) : r->MutableMessage(&m, f);
          Fill(*sub, token, depth + 1);
          break;
        }
      }
    }
  }
}

struct Method {
  std::string path;  // "/belay.v1.WorkerLink/Register"
  const Descriptor* input;
  bool worker;  // on the worker link (else the coordinator socket)
  bool streaming;
};

}  // namespace

int main(int argc, char** argv) {
  std::string worker, socket, token, ca;
  int count = 50;
  uint64_t seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--worker")
      worker = v;
    else if (k == "--socket")
      socket = v;
    else if (k == "--token")
      token = v;
    else if (k == "--ca")
      ca = v;
    else if (k == "--count")
      count = std::stoi(v);
    else if (k == "--seed")
      seed = std::stoull(v);
    else {
      std::cerr << "rpc_junk: unknown option " << k << "\n";
      return 2;
    }
  }
  if (worker.empty() || socket.empty()) {
    std::cerr << "usage: rpc_junk --worker HOST:PORT --socket PATH [--token T] [--ca PEM] [--count "
                 "N] [--seed S]\n";
    return 2;
  }
  rng.seed(seed);
  std::vector<Method> methods;
  // Each service from its .proto file's descriptor (which also makes sure it is loaded).
  const std::pair<const google::protobuf::FileDescriptor*, const char*> services[] = {
      {belay::v1::RegisterRequest::descriptor()->file(), "WorkerLink"},
      {belay::v1::SubmitCampaignRequest::descriptor()->file(), "Coordinator"}};
  for (const auto& [file, name] : services) {
    const google::protobuf::ServiceDescriptor* sd = file->FindServiceByName(name);
    if (sd == nullptr) {
      std::cerr << "rpc_junk: no service " << name << " in " << file->name() << "\n";
      return 2;
    }
    for (int i = 0; i < sd->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* md = sd->method(i);
      methods.push_back(
          {"/" + std::string(sd->full_name()) + "/" + std::string(md->name()), md->input_type(),
           sd->full_name() == belay::v1::WorkerLink::service_full_name(), md->server_streaming()});
    }
  }
  // The worker link is TLS (belayd's own CA, certificate issued to "belayd") when --ca is given.
  std::stringstream ca_pem;
  if (!ca.empty()) ca_pem << std::ifstream(ca).rdbuf();
  auto worker_channel = belay::runtime::WorkerLinkChannel(worker, ca_pem.str(), "belayd");
  auto socket_channel = grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials());
  grpc::GenericStub worker_stub(worker_channel), socket_stub(socket_channel);
  google::protobuf::DynamicMessageFactory factory;
  std::map<std::string, int> codes;
  for (int i = 0; i < count; ++i) {
    const Method& m = methods[rng() % methods.size()];
    std::string payload;
    // Half well-formed messages (they reach the handlers), half that fail to parse.
    const uint64_t draw = rng() % 20;
    const int kind = draw < 4 ? 0 : draw < 14 ? 1 : draw < 17 ? 2 : 3;
    if (kind == 0) {
      payload = RandomBytes(rng() % 5000);
    } else {
      std::unique_ptr<Message> msg(factory.GetPrototype(m.input)->New());
      Fill(*msg, token, 0);
      payload = msg->SerializeAsString();
      if (kind == 2 && !payload.empty()) payload.resize(rng() % payload.size());
      if (kind == 3) {
        for (int k = 0; k < 1 + static_cast<int>(rng() % 8) && !payload.empty(); ++k) {
          payload[rng() % payload.size()] = static_cast<char>(rng() & 0xff);
        }
      }
    }
    grpc::GenericStub& stub = m.worker ? worker_stub : socket_stub;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc::Slice slice(payload);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::Status status;
    if (m.streaming) {
      grpc::CompletionQueue cq;
      std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
          stub.PrepareCall(&ctx, m.path, &cq);
      void* tag = nullptr;
      bool ok = false;
      call->StartCall(reinterpret_cast<void*>(1));
      cq.Next(&tag, &ok);
      call->Write(request, reinterpret_cast<void*>(2));
      cq.Next(&tag, &ok);
      call->WritesDone(reinterpret_cast<void*>(3));
      cq.Next(&tag, &ok);
      call->Read(&response, reinterpret_cast<void*>(4));
      cq.Next(&tag, &ok);
      ctx.TryCancel();
      call->Finish(&status, reinterpret_cast<void*>(5));
      while (cq.Next(&tag, &ok)) {
        if (tag == reinterpret_cast<void*>(5)) break;
      }
      cq.Shutdown();
      while (cq.Next(&tag, &ok)) {
      }
    } else {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      stub.UnaryCall(&ctx, m.path, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
        std::lock_guard lock(mu);
        status = std::move(s);
        done = true;
        cv.notify_all();
      });
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return done; });
    }
    ++codes[std::to_string(static_cast<int>(status.error_code()))];
  }
  for (const auto& [code, n] : codes) std::cout << "status " << code << ": " << n << " calls\n";
  return 0;
}
