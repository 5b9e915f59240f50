// A belayd in one process for the service harnesses: the real Supervisor over the in-memory
// store, the fake scheduler and a fake clock, with one campaign (2 ranks, owned by uid 1000)
// submitted and its first attempt running, so that there are valid tokens and ids to call
// with. Each input gets a fresh world, so that inputs do not depend on each other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/clock.h"
#include "daemon/rpc/worker_link_service.h"
#include "daemon/scheduler/fake_scheduler.h"
#include "daemon/store/memory_store.h"
#include "daemon/supervisor/supervisor.h"
#include "fuzz/service_sessions.pb.h"

namespace belay::fuzz {

// Sessions longer than this are not run: they only slow the search down.
inline constexpr int kMaxSessionCalls = 64;

// Parses a session input (WorkerLinkSession, CoordinatorSession); false for bytes that are
// not one or hold more than kMaxSessionCalls calls.
template <typename Session>
bool ParseSession(const uint8_t* data, size_t size, Session* session) {
  return session->ParseFromArray(data, static_cast<int>(size)) &&
         session->calls_size() <= kMaxSessionCalls;
}

// Calls a gRPC handler directly with `req` and a fresh response. Errors are answers, not
// failures: the answer is not looked at.
template <typename Service, typename Req, typename Resp>
void Serve(Service& service, grpc::ServerContext* ctx, const Req& req,
           grpc::Status (Service::*handler)(grpc::ServerContext*, const Req*, Resp*)) {
  Resp resp;
  (void)(service.*handler)(ctx, &req, &resp);
}

class DaemonWorld {
 public:
  static constexpr uint32_t kOwnerUid = 1000;

  // State and checkpoints under `dir`, which is emptied first. Aborts if the campaign cannot
  // be submitted and started (the harness is then broken).
  explicit DaemonWorld(std::filesystem::path dir);
  ~DaemonWorld();
  DaemonWorld(const DaemonWorld&) = delete;
  DaemonWorld& operator=(const DaemonWorld&) = delete;

  supervisor::Supervisor& supervisor() { return *supervisor_; }
  store::MemoryStore& store() { return store_; }
  const Clock& clock() const { return clock_; }
  const std::filesystem::path& state_dir() const { return dir_; }
  const std::string& campaign_id() const { return campaign_id_; }

  // Runs one worker-link request (with the token the call asks for), or the scheduler or
  // clock event, against `link`. Handler errors are answers, not failures.
  void Run(rpc::WorkerLinkService& link, const WorkerLinkCall& call);

 private:
  std::string TokenOf(size_t submission) const;
  void Tick();

  std::filesystem::path dir_;
  store::MemoryStore store_;
  sched::FakeScheduler scheduler_;
  FakeClock clock_;
  std::unique_ptr<supervisor::Supervisor> supervisor_;
  std::string campaign_id_;
};

}  // namespace belay::fuzz
