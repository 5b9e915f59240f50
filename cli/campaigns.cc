// The commands that talk to belayd: submit, ls, status, watch, loss, events, ckpt ls,
// cancel, logs, nodes, daemon.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "belay/v1/enum_names.h"
#include "cli/commands.h"
#include "cli/daemon_client.h"
#include "common/campaign_spec.h"
#include "common/strings.h"

namespace belay::cli {
namespace {

namespace fs = std::filesystem;

std::string Time(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0) return "-";
  std::time_t t = static_cast<std::time_t>(ts.seconds());
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string Duration(int64_t s) {
  if (s < 0) return "-";
  if (s < 60) return Cat(s, "s");
  if (s < 3600) return Cat(s / 60, "m", s % 60 < 10 ? "0" : "", s % 60, "s");
  return Cat(s / 3600, "h", (s % 3600) / 60 < 10 ? "0" : "", (s % 3600) / 60, "m");
}

struct Common {
  const std::string* socket;
  int* exit_code;
  std::string path() const { return SocketPath(*socket); }
};

// --- submit ---------------------------------------------------------------------------

int Watch(const Common& c, const std::string& id, bool json);

int Submit(const Common& c, const std::string& file, bool validate_only, bool watch, bool json) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::cerr << "belay: " << file << ": cannot read\n";
    return kExitInvalid;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  // The API carries the file as text; a file that is not UTF-8 is reported here, where it
  // is, by the same parser belayd runs.
  const std::string text = ss.str();
  if (!google::protobuf::internal::IsStructurallyValidUTF8(text.data(),
                                                           static_cast<int>(text.size()))) {
    SpecParseOptions o;
    o.check_paths = false;
    SpecParseResult parsed = ParseCampaignSpec(ss.str(), file, o);
    for (const SpecError& e : parsed.errors) std::cerr << e.ToString() << "\n";
    if (parsed.errors.empty()) std::cerr << file << ":1:1: not valid UTF-8\n";
    return kExitInvalid;
  }
  v1::SubmitCampaignRequest req;
  req.set_spec_toml(ss.str());
  req.set_spec_file(file);
  req.set_spec_dir(fs::absolute(file).parent_path().string());
  req.set_validate_only(validate_only);
  v1::SubmitCampaignResponse resp;
  auto stub = Connect(c.path());
  grpc::Status s = stub->SubmitCampaign(CallContext().get(), req, &resp);
  if (!s.ok()) return ReportError(s, Cat("cannot submit ", file), c.path());
  if (resp.errors_size() > 0) {
    for (const v1::SpecError& e : resp.errors()) {
      std::cerr << file << ":" << e.line() << ":" << e.column() << ": "
                << (e.key().empty() ? "" : e.key() + ": ") << e.message() << "\n";
    }
    return kExitInvalid;
  }
  if (validate_only) {
    std::cout << "OK " << file << " (checked by belayd)\n";
    return kExitOk;
  }
  if (json) {
    std::cout << ToJson(resp.campaign()) << "\n";
  } else {
    std::cout << "submitted " << resp.campaign().id() << "\n";
  }
  return watch ? Watch(c, resp.campaign().id(), json) : kExitOk;
}

// --- ls, status ---------------------------------------------------------------------

int List(const Common& c, bool all, bool json) {
  v1::ListCampaignsRequest req;
  req.set_all_users(all);
  v1::ListCampaignsResponse resp;
  grpc::Status s = Connect(c.path())->ListCampaigns(CallContext().get(), req, &resp);
  if (!s.ok()) return ReportError(s, "cannot list campaigns", c.path());
  if (json) {
    std::cout << ToJson(resp) << "\n";
    return kExitOk;
  }
  std::cout << std::left << std::setw(24) << "ID" << std::setw(12) << "STATE" << std::setw(14)
            << "STEP" << std::setw(9) << "RESTARTS" << std::setw(10) << "OWNER"
            << "SUBMITTED\n";
  for (const v1::Campaign& x : resp.campaigns()) {
    std::cout << std::left << std::setw(24) << x.id() << std::setw(12) << v1::ShortName(x.state())
              << std::setw(14) << Cat(x.current_step(), "/", x.total_steps()) << std::setw(9)
              << x.restarts_used() << std::setw(10) << x.owner_name() << Time(x.submit_time())
              << "\n";
  }
  if (resp.more())
    std::cout << "(older campaigns not shown: belayd lists the newest " << resp.campaigns_size()
              << ")\n";
  return kExitOk;
}

// GetCampaign; kExitOk, or the exit code of the error it printed.
int Fetch(const Common& c, const std::string& id, v1::GetCampaignResponse* resp) {
  v1::GetCampaignRequest req;
  req.set_campaign_id(id);
  grpc::Status s = Connect(c.path())->GetCampaign(CallContext().get(), req, resp);
  return s.ok() ? kExitOk : ReportError(s, Cat("campaign ", id), c.path());
}

int Status(const Common& c, const std::string& id, bool json) {
  v1::GetCampaignResponse resp;
  if (int rc = Fetch(c, id, &resp); rc != kExitOk) return rc;
  if (json) {
    std::cout << ToJson(resp) << "\n";
    return kExitOk;
  }
  const v1::Campaign& x = resp.campaign();
  const v1::Progress& p = resp.progress();
  std::cout << x.id() << "  " << v1::ShortName(x.state());
  if (x.end_reason() != v1::END_REASON_UNSPECIFIED)
    std::cout << " (" << v1::ShortName(x.end_reason()) << ")";
  std::cout << "\n  owner " << x.owner_name() << ", submitted " << Time(x.submit_time()) << " from "
            << x.spec_file() << "\n  step " << x.current_step() << "/" << x.total_steps() << ", "
            << x.tokens_seen() << " tokens";
  if (p.loss() != 0) std::cout << ", loss " << std::fixed << std::setprecision(4) << p.loss();
  if (p.tokens_per_s() > 0)
    std::cout << ", " << std::setprecision(0) << p.tokens_per_s() << " tok/s";
  if (p.has_eta()) std::cout << ", ETA " << Duration(p.eta().seconds());
  std::cout << "\n  restarts " << x.restarts_used() << "/" << x.max_restarts() << ", rollbacks "
            << x.rollbacks_used() << "/" << x.max_rollbacks() << ", last checkpoint "
            << (x.has_last_checkpoint_step() ? std::to_string(x.last_checkpoint_step()) : "-")
            << "\n";
  if (!x.end_message().empty()) std::cout << "  " << x.end_message() << "\n";
  std::cout << "  attempts:\n";
  for (const v1::Attempt& a : resp.attempts()) {
    std::cout << "    " << a.number() << "  " << std::left << std::setw(9)
              << v1::ShortName(a.state()) << std::setw(14)
              << (a.end_reason() == v1::END_REASON_UNSPECIFIED ? "" : v1::ShortName(a.end_reason()))
              << "job " << (a.scheduler_job_id().empty() ? "-" : a.scheduler_job_id()) << ", "
              << a.world_size() << " ranks, steps " << a.first_step() << "-" << a.last_step();
    if (!a.end_message().empty()) std::cout << ": " << a.end_message();
    std::cout << "\n";
  }
  return kExitOk;
}

// --- watch ----------------------------------------------------------------------------

std::string Bar(int64_t step, int64_t total, int width) {
  const double f =
      total > 0 ? std::clamp(static_cast<double>(step) / static_cast<double>(total), 0.0, 1.0)
                : 0.0;
  const int full = static_cast<int>(f * width);
  return Cat("[", std::string(static_cast<size_t>(full), '='), full < width ? ">" : "",
             std::string(static_cast<size_t>(std::max(0, width - full - 1)), ' '), "]");
}

int Watch(const Common& c, const std::string& id, bool json) {
  v1::WatchCampaignRequest req;
  req.set_campaign_id(id);
  req.mutable_progress_interval()->set_seconds(1);
  auto ctx = CallContext(0);
  auto stub = Connect(c.path());
  std::unique_ptr<grpc::ClientReader<v1::WatchCampaignResponse>> reader =
      stub->WatchCampaign(ctx.get(), req);
  const bool tty = isatty(STDOUT_FILENO) != 0 && !json;
  v1::WatchCampaignResponse msg;
  v1::CampaignState final_state = v1::CAMPAIGN_STATE_UNSPECIFIED;
  int64_t last_printed_step = -1;
  auto last_line = std::chrono::steady_clock::now() - std::chrono::hours(1);
  bool progress_shown = false;
  while (reader->Read(&msg)) {
    if (json) {
      std::cout << ToJson(msg) << std::endl;
    }
    if (msg.has_campaign()) final_state = msg.campaign().state();
    if (json) continue;
    if (msg.has_event()) {
      if (progress_shown && tty) std::cout << "\r\033[K";
      std::cout << Time(msg.event().time()) << "  " << msg.event().message() << "\n";
      progress_shown = false;
    }
    if (msg.has_progress()) {
      const v1::Progress& p = msg.progress();
      std::ostringstream line;
      line << "step " << p.step() << "/" << p.total_steps() << " "
           << Bar(p.step(), p.total_steps(), 30) << " " << std::fixed << std::setprecision(0)
           << (p.total_steps() > 0
                   ? 100.0 * static_cast<double>(p.step()) / static_cast<double>(p.total_steps())
                   : 0.0)
           << "%  " << p.tokens_per_s() << " tok/s  ETA "
           << (p.has_eta() ? Duration(p.eta().seconds()) : "-") << "  loss " << std::setprecision(4)
           << p.loss() << "  restarts " << p.restarts_used();
      if (tty) {
        std::cout << "\r\033[K" << line.str() << std::flush;
        progress_shown = true;
      } else if (p.step() != last_printed_step &&
                 std::chrono::steady_clock::now() - last_line > std::chrono::seconds(10)) {
        std::cout << line.str() << "\n" << std::flush;
        last_printed_step = p.step();
        last_line = std::chrono::steady_clock::now();
      }
    }
  }
  if (progress_shown) std::cout << "\n";
  grpc::Status s = reader->Finish();
  if (!s.ok()) return ReportError(s, Cat("watching ", id), c.path());
  if (!json) std::cout << id << " " << v1::ShortName(final_state) << "\n";
  return final_state == v1::CAMPAIGN_STATE_COMPLETED ? kExitOk : kExitCampaignFailed;
}

// --- loss -----------------------------------------------------------------------------

int Loss(const Common& c, const std::string& id, bool csv, bool json, int width, int height) {
  v1::QueryMetricsRequest req;
  req.set_campaign_id(id);
  req.set_include_raw(csv || json);
  req.set_max_points(csv || json ? 0 : width);
  v1::QueryMetricsResponse resp;
  auto stub = Connect(c.path());
  grpc::Status s = stub->QueryMetrics(CallContext().get(), req, &resp);
  if (!s.ok()) return ReportError(s, Cat("metrics of ", id), c.path());
  // belayd answers the raw records in pages: the whole series is every page's.
  while (resp.more()) {
    req.set_first_step(resp.next_first_step());
    req.set_raw_only(true);
    v1::QueryMetricsResponse page;
    s = stub->QueryMetrics(CallContext().get(), req, &page);
    if (!s.ok()) return ReportError(s, Cat("metrics of ", id), c.path());
    resp.mutable_steps()->MergeFrom(page.steps());
    resp.mutable_evals()->MergeFrom(page.evals());
    resp.set_more(page.more());
    resp.set_next_first_step(page.next_first_step());
  }
  if (json) {
    std::cout << ToJson(resp) << "\n";
    return kExitOk;
  }
  const v1::MetricSeriesData* train = nullptr;
  const v1::MetricSeriesData* val = nullptr;
  for (const v1::MetricSeriesData& d : resp.series()) {
    if (d.series() == v1::METRIC_SERIES_LOSS) train = &d;
    if (d.series() == v1::METRIC_SERIES_VAL_LOSS) val = &d;
  }
  if (csv) {
    std::map<int64_t, double> vals;
    for (const v1::EvalMetrics& e : resp.evals()) vals[e.step()] = e.loss();
    std::cout << "step,loss,val_loss\n" << std::setprecision(10);
    for (const v1::StepMetrics& m : resp.steps()) {
      std::cout << m.step() << "," << m.loss() << ",";
      if (auto it = vals.find(m.step()); it != vals.end()) std::cout << it->second;
      std::cout << "\n";
    }
    return kExitOk;
  }
  if (train == nullptr || train->steps_size() == 0) {
    std::cout << id << ": no steps reported yet\n";
    return kExitOk;
  }
  // A character plot: '*' train loss (bucket means), 'o' validation loss.
  double lo = 1e300, hi = -1e300;
  for (double v : train->values()) lo = std::min(lo, v), hi = std::max(hi, v);
  if (val)
    for (double v : val->values()) lo = std::min(lo, v), hi = std::max(hi, v);
  if (hi - lo < 1e-9) hi = lo + 1;
  const int64_t first = 0, last = train->steps(train->steps_size() - 1);
  std::vector<std::string> grid(static_cast<size_t>(height),
                                std::string(static_cast<size_t>(width), ' '));
  auto put = [&](int64_t step, double v, char ch) {
    const int x = static_cast<int>(
        std::llround(static_cast<double>(step - first) /
                     static_cast<double>(std::max<int64_t>(1, last - first)) * (width - 1)));
    const int y = static_cast<int>(std::llround((hi - v) / (hi - lo) * (height - 1)));
    if (x >= 0 && x < width && y >= 0 && y < height)
      grid[static_cast<size_t>(y)][static_cast<size_t>(x)] = ch;
  };
  for (int i = 0; i < train->steps_size(); ++i) put(train->steps(i), train->values(i), '*');
  if (val)
    for (int i = 0; i < val->steps_size(); ++i) put(val->steps(i), val->values(i), 'o');
  std::cout << id << ": loss (* train, o validation) over steps " << first << "-" << last << "\n";
  for (int y = 0; y < height; ++y) {
    const double v = hi - (hi - lo) * y / (height - 1);
    std::cout << std::fixed << std::setprecision(3) << std::setw(8) << v << " |"
              << grid[static_cast<size_t>(y)] << "\n";
  }
  std::cout << std::string(9, ' ') << "+" << std::string(static_cast<size_t>(width), '-') << "\n"
            << std::string(10, ' ') << std::left << std::setw(width - 8) << first << std::right
            << std::setw(8) << last << "\n";
  // The plot shows bucket means; the line below gives the last reported values.
  v1::GetCampaignResponse now;
  if (int rc = Fetch(c, id, &now); rc != kExitOk) return rc;
  std::cout << "step " << now.progress().step() << ": train loss " << std::setprecision(4)
            << now.progress().loss();
  if (val && val->values_size() > 0) {
    std::cout << ", latest validation point " << val->values(val->values_size() - 1) << " (step "
              << val->steps(val->steps_size() - 1) << ")";
  }
  std::cout << "\n";
  return kExitOk;
}

// --- goodput -----------------------------------------------------------------------------

int Goodput(const Common& c, const std::string& id, bool json) {
  v1::GetCampaignResponse resp;
  if (int rc = Fetch(c, id, &resp); rc != kExitOk) return rc;
  if (json) {
    std::cout << ToJson(resp.ledger()) << "\n";
    return kExitOk;
  }
  const v1::GoodputSummary& g = resp.ledger().summary();
  auto rs = [](double h) { return Cat(std::llround(h * 3600.0), " rank-s"); };
  std::cout << id << ": goodput " << std::fixed << std::setprecision(1)
            << 100.0 * g.goodput_fraction() << "% (" << rs(g.productive_rank_hours())
            << " productive of " << rs(g.spent_rank_hours()) << " spent)\n"
            << "  lost work " << rs(g.lost_work_rank_hours()) << ", detection "
            << rs(g.detection_rank_hours()) << ", restarts " << rs(g.restart_rank_hours())
            << ", checkpoints " << rs(g.checkpoint_rank_hours()) << "; " << g.incidents()
            << " incident" << (g.incidents() == 1 ? "" : "s") << "\n";
  for (const v1::GoodputIncident& i : resp.ledger().incidents()) {
    std::cout << "  attempt " << i.attempt_number() << " " << v1::ShortName(i.end_reason()) << ": "
              << i.lost_steps() << " steps redone (" << rs(i.lost_work_rank_hours())
              << "), detected after " << rs(i.detection_rank_hours()) << ", restart "
              << rs(i.restart_rank_hours()) << ", " << std::setprecision(0) << i.downtime_s()
              << " s without progress\n";
  }
  return kExitOk;
}

// --- events, ckpt, cancel, logs, nodes, daemon ------------------------------------------

int Events(const Common& c, const std::string& id, bool json) {
  int64_t after = -1;
  for (;;) {
    v1::ListEventsRequest req;
    req.set_campaign_id(id);
    req.set_after_seq(after);
    req.set_limit(1000);
    v1::ListEventsResponse resp;
    grpc::Status s = Connect(c.path())->ListEvents(CallContext().get(), req, &resp);
    if (!s.ok()) return ReportError(s, Cat("events of ", id), c.path());
    for (const v1::Event& e : resp.events()) {
      if (json) {
        std::cout << ToJson(e) << "\n";
      } else {
        std::cout << Time(e.time()) << "  " << std::left << std::setw(8)
                  << v1::ShortName(e.severity()) << e.message() << "\n";
      }
    }
    if (!resp.more()) return kExitOk;
    after = resp.next_after_seq();
  }
}

int Checkpoints(const Common& c, const std::string& id, bool json) {
  v1::ListCheckpointsRequest req;
  req.set_campaign_id(id);
  v1::ListCheckpointsResponse resp;
  auto stub = Connect(c.path());
  for (bool more = true; more;) {
    v1::ListCheckpointsResponse page;
    grpc::Status s = stub->ListCheckpoints(CallContext().get(), req, &page);
    if (!s.ok()) return ReportError(s, Cat("checkpoints of ", id), c.path());
    resp.mutable_checkpoints()->MergeFrom(page.checkpoints());
    more = page.more();
    req.set_before_step(page.next_before_step());
  }
  if (json) {
    std::cout << ToJson(resp) << "\n";
    return kExitOk;
  }
  std::cout << std::left << std::setw(10) << "STEP" << std::setw(11) << "STATE" << std::setw(9)
            << "ATTEMPT" << std::setw(7) << "RANKS" << std::setw(21) << "COMMITTED"
            << "DIR\n";
  for (const v1::Checkpoint& k : resp.checkpoints()) {
    std::cout << std::left << std::setw(10) << k.step() << std::setw(11) << v1::ShortName(k.state())
              << std::setw(9) << k.attempt_number() << std::setw(7) << k.world_size()
              << std::setw(21) << Time(k.committed_time()) << k.dir() << "\n";
  }
  return kExitOk;
}

int Cancel(const Common& c, const std::string& id) {
  v1::CancelCampaignRequest req;
  req.set_campaign_id(id);
  v1::CancelCampaignResponse resp;
  grpc::Status s = Connect(c.path())->CancelCampaign(CallContext().get(), req, &resp);
  if (!s.ok()) return ReportError(s, Cat("cannot cancel ", id), c.path());
  std::cout << "cancel requested for " << id << "; its running attempt checkpoints and stops\n";
  return kExitOk;
}

int Logs(const Common& c, const std::string& id, int rank, int attempt, bool follow) {
  auto stub = Connect(c.path());
  std::optional<int64_t> offset;
  for (;;) {
    v1::GetLogsRequest req;
    req.set_campaign_id(id);
    req.set_rank(rank);
    req.set_attempt_number(attempt);
    if (offset) req.set_from_offset(*offset);
    v1::GetLogsResponse resp;
    grpc::Status s = stub->GetLogs(CallContext().get(), req, &resp);
    if (!s.ok()) return ReportError(s, Cat("logs of ", id), c.path());
    std::cout << resp.data() << std::flush;
    offset = resp.offset() + static_cast<int64_t>(resp.data().size());
    if (!follow) return kExitOk;
    if (static_cast<int64_t>(resp.data().size()) == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int Nodes(const Common& c, bool json) {
  v1::ListNodesResponse resp;
  v1::ListNodesRequest req;
  auto stub = Connect(c.path());
  for (bool more = true; more;) {
    v1::ListNodesResponse page;
    grpc::Status s = stub->ListNodes(CallContext().get(), req, &page);
    if (!s.ok()) return ReportError(s, "cannot list nodes", c.path());
    resp.mutable_nodes()->MergeFrom(page.nodes());
    more = page.more();
    req.set_after_name(page.next_after_name());
  }
  if (json) {
    std::cout << ToJson(resp) << "\n";
    return kExitOk;
  }
  if (resp.nodes().empty())
    std::cout << "no nodes recorded (the local scheduler runs on this machine only)\n";
  if (!resp.nodes().empty()) {
    std::cout << fmt::format("{:<20} {:>10} {:>8} {:>8} {:>5}  {}\n", "NODE", "REPUTATION",
                             "ATTEMPTS", "FAILURES", "SLOW", "STATE");
  }
  for (const v1::Node& n : resp.nodes()) {
    std::string state =
        n.excluded() ? Cat("excluded until ", Time(n.excluded_until()), ": ", n.exclusion_reason())
                     : "admitted";
    if (!n.slurm_state().empty()) state = Cat(n.slurm_state(), ", ", state);
    if (n.has_last_failure_time()) {
      state += Cat("; last failure ", v1::ShortName(n.last_failure_reason()), " at ",
                   Time(n.last_failure_time()));
    }
    std::cout << fmt::format("{:<20} {:>10.2f} {:>8} {:>8} {:>5}  {}\n", n.name(), n.reputation(),
                             n.attempts_hosted(), n.failures_attributed(), n.slow_attempts(),
                             state);
  }
  return kExitOk;
}

int Daemon(const Common& c, bool json) {
  v1::GetDaemonInfoResponse resp;
  grpc::Status s =
      Connect(c.path())->GetDaemonInfo(CallContext().get(), v1::GetDaemonInfoRequest(), &resp);
  if (!s.ok()) return ReportError(s, "daemon info", c.path());
  if (json) {
    std::cout << ToJson(resp) << "\n";
    return kExitOk;
  }
  std::cout << resp.version() << "\n  state " << resp.state_dir() << "\n  workers connect to "
            << resp.worker_listen_address() << "\n  scheduler " << v1::ShortName(resp.scheduler())
            << "\n  store "
            << (resp.read_only() ? "READ-ONLY: " + resp.read_only_reason() : "writable")
            << "\n  you are uid " << resp.caller_uid()
            << (resp.caller_is_operator() ? " (operator: all campaigns)" : "") << "\n"
            << "  slurmctld calls " << resp.slurm_rpcs() << " (" << resp.slurm_rpcs_refused()
            << " held back), budget " << resp.slurm_rpc_budget_per_minute() << " per minute\n";
  return kExitOk;
}

}  // namespace

void AddCampaignCommands(CLI::App& app, const std::string* socket, int* exit_code) {
  auto c = std::make_shared<Common>(Common{socket, exit_code});
  auto json = std::make_shared<bool>(false);
  auto id = std::make_shared<std::string>();

  {
    auto file = std::make_shared<std::string>();
    auto validate = std::make_shared<bool>(false), watch = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("submit", "Submit a campaign file to belayd");
    cmd->add_option("file", *file, "campaign file")->required();
    cmd->add_flag("--validate-only", *validate,
                  "let belayd check the file (paths on its machine) without storing it");
    cmd->add_flag("--watch", *watch, "follow the campaign after submitting (as `belay watch`)");
    cmd->add_flag("--json", *json, "print the stored campaign as JSON");
    cmd->callback([=] { *c->exit_code = Submit(*c, *file, *validate, *watch, *json); });
  }
  {
    auto all = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("ls", "List your campaigns, newest first");
    cmd->add_flag("--all", *all, "every user's campaigns (root only)");
    cmd->add_flag("--json", *json, "JSON output");
    cmd->callback([=] { *c->exit_code = List(*c, *all, *json); });
  }
  auto with_id = [&](const char* name, const char* help) {
    CLI::App* cmd = app.add_subcommand(name, help);
    cmd->add_option("id", *id, "campaign id (from `belay ls`)")->required();
    return cmd;
  };
  {
    CLI::App* cmd = with_id("status", "A campaign's state, progress and attempts");
    cmd->add_flag("--json", *json, "JSON output");
    cmd->callback([=] { *c->exit_code = Status(*c, *id, *json); });
  }
  {
    CLI::App* cmd = with_id(
        "watch", "Follow a campaign live until it ends (exit 0 if it completed, 5 otherwise)");
    cmd->add_flag("--json", *json, "one JSON object per update");
    cmd->callback([=] { *c->exit_code = Watch(*c, *id, *json); });
  }
  {
    auto csv = std::make_shared<bool>(false);
    auto width = std::make_shared<int>(72), height = std::make_shared<int>(16);
    CLI::App* cmd = with_id("loss", "Train and validation loss as a terminal plot");
    cmd->add_flag("--csv", *csv, "step,loss,val_loss rows instead of a plot");
    cmd->add_flag("--json", *json, "the metrics as JSON");
    cmd->add_option("--width", *width, "plot columns")->check(CLI::Range(20, 400));
    cmd->add_option("--height", *height, "plot rows")->check(CLI::Range(5, 100));
    cmd->callback([=] { *c->exit_code = Loss(*c, *id, *csv, *json, *width, *height); });
  }
  {
    CLI::App* cmd =
        with_id("events", "A campaign's event log: every decision belayd took, and why");
    cmd->add_flag("--json", *json, "one JSON object per event");
    cmd->callback([=] { *c->exit_code = Events(*c, *id, *json); });
  }
  {
    CLI::App* ckpt = app.add_subcommand("ckpt", "Checkpoints");
    ckpt->require_subcommand(1);
    CLI::App* cmd = ckpt->add_subcommand("ls", "A campaign's checkpoints, newest first");
    cmd->add_option("id", *id, "campaign id")->required();
    cmd->add_flag("--json", *json, "JSON output");
    cmd->callback([=] { *c->exit_code = Checkpoints(*c, *id, *json); });
  }
  {
    CLI::App* cmd =
        with_id("cancel", "Cancel a campaign: its running attempt checkpoints and stops");
    cmd->callback([=] { *c->exit_code = Cancel(*c, *id); });
  }
  {
    auto rank = std::make_shared<int>(0), attempt = std::make_shared<int>(0);
    auto follow = std::make_shared<bool>(false);
    CLI::App* cmd = with_id("logs", "A rank's output (default: rank 0 of the current attempt)");
    cmd->add_option("--rank", *rank, "rank")->check(CLI::NonNegativeNumber);
    cmd->add_option("--attempt", *attempt, "attempt number (default: the current one)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_flag("-f,--follow", *follow, "keep printing what is appended");
    cmd->callback([=] { *c->exit_code = Logs(*c, *id, *rank, *attempt, *follow); });
  }
  {
    CLI::App* cmd =
        with_id("goodput",
                "Where a campaign's rank-hours went: productive, lost work, detection, restarts");
    cmd->add_flag("--json", *json, "the ledger as JSON");
    cmd->callback([=] { *c->exit_code = Goodput(*c, *id, *json); });
  }
  {
    CLI::App* cmd = app.add_subcommand("nodes", "Nodes belayd knows: state, failures, exclusion");
    cmd->add_flag("--json", *json, "JSON output");
    cmd->callback([=] { *c->exit_code = Nodes(*c, *json); });
  }
  {
    CLI::App* cmd =
        app.add_subcommand("daemon", "What belayd you are talking to, and who you are to it");
    cmd->add_flag("--json", *json, "JSON output");
    cmd->callback([=] { *c->exit_code = Daemon(*c, *json); });
  }
}

}  // namespace belay::cli
