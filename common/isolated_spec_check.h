// Parsing an untrusted campaign file in a child process first, so that a parser crash ends
// the child and not the process that asked (belayd, root, serving every local user).
//
// The design: belayd runs itself (/proc/self/exe) with the hidden flag --check-spec and the
// file's bytes on standard input. The child gives up root's rights where it has them, parses
// the bytes as ParseCampaignSpec does (without file-system checks) and answers one line.
// The parent bounds it (CPU time, address space, no core file, a wall-clock timeout after
// which it is killed) and takes only that line, from a child that exited 0, as a pass. Only
// then does belayd parse the same bytes itself, with the submitting user's file-system checks
// and the full error list (the parser is deterministic: bytes it survived once it survives
// again). The shape bounds (toml_bounds.h) already keep every known crash out of the parser;
// this is the second wall, for the crash nobody has found yet.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace belay {

// The flag a program hosting the child's side answers to (belayd's main does).
inline constexpr std::string_view kSpecCheckFlag = "--check-spec";

// The child's side, for main() to return when called with kSpecCheckFlag alone: reads a
// campaign file on standard input (at most kMaxSpecBytes + 1 bytes), parses it and writes
// "belay-spec-check: parsed, <n> errors" on standard output. Run as root it first drops to
// uid/gid 65534 (nobody) with no supplementary groups, where the system lets it.
int RunSpecCheck();

struct SpecCheckOptions {
  // The child: a program and its arguments, started without a shell or an environment.
  std::vector<std::string> argv = {"/proc/self/exe", std::string(kSpecCheckFlag)};
  std::chrono::milliseconds timeout{10000};  // then SIGKILL
  std::chrono::seconds cpu_limit{10};        // RLIMIT_CPU
  // RLIMIT_AS: far above what parsing 1 MiB takes, far below the machine. Not applied in a
  // sanitizer build (its shadow memory reserves terabytes of address space).
  uint64_t address_space_limit = uint64_t{1} << 30;
};

// OK when the child parsed `text` and exited 0 with its answer; whatever the file has wrong
// is for the caller's own parse to report. InvalidArgument "campaign file could not be parsed
// safely: <why>" when the child was killed (by a signal, past its CPU time or the timeout),
// exited otherwise or answered something else. Internal when no child could be started.
// Thread-safe; blocks the calling thread for the child's run.
absl::Status CheckSpecInChild(std::string_view text, const SpecCheckOptions& options = {});

}  // namespace belay
