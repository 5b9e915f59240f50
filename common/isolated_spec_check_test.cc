// The campaign file check in a child: this test binary is its own child (see main below);
// /bin/sh stands in for a child that crashes, hangs, spins or answers nonsense.
#include "common/isolated_spec_check.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>

#include "common/campaign_spec.h"

namespace belay {
namespace {

using std::chrono::steady_clock;

std::string Demo() {
  std::stringstream text;
  text << std::ifstream(BELAY_SOURCE_DIR "/deploy/examples/demo.toml").rdbuf();
  return text.str();
}

SpecCheckOptions Shell(std::string script) {
  SpecCheckOptions o;
  o.argv = {"/bin/sh", "-c", std::move(script)};
  return o;
}

void ExpectUnsafe(const absl::Status& s, std::string_view why) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(std::string(s.message()),
            "campaign file could not be parsed safely: " + std::string(why));
}

TEST(IsolatedSpecCheck, FilesTheParserSurvivesPassWhetherValidOrNot) {
  ASSERT_FALSE(Demo().empty());
  EXPECT_TRUE(CheckSpecInChild(Demo()).ok());
  EXPECT_TRUE(
      CheckSpecInChild("[campaign]\nname = 5\n").ok());  // errors are the caller's to report
  EXPECT_TRUE(CheckSpecInChild("").ok());
  EXPECT_TRUE(CheckSpecInChild(std::string(kMaxSpecBytes + 10, '#')).ok());
}

TEST(IsolatedSpecCheck, TheFileThatCrashedTheParserIsAnsweredByTheBounds) {
  std::string text = "a";
  for (int i = 0; i < 300000; ++i) text += ".a";
  EXPECT_TRUE(CheckSpecInChild(text + " = 1\n").ok());
}

TEST(IsolatedSpecCheck, AChildKilledBySignalIsRefused) {
  ExpectUnsafe(CheckSpecInChild(Demo(), Shell("kill -SEGV $$")),
               "the check was killed by signal 11 (Segmentation fault)");
}

TEST(IsolatedSpecCheck, AChildThatHangsIsKilledAtTheTimeout) {
  SpecCheckOptions o = Shell("exec sleep 60");
  o.timeout = std::chrono::milliseconds(300);
  const auto start = steady_clock::now();
  ExpectUnsafe(CheckSpecInChild(Demo(), o),
               "the check did not finish within 300 ms and was killed");
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(IsolatedSpecCheck, AChildPastItsCpuLimitIsRefused) {
  SpecCheckOptions o = Shell("while :; do :; done");
  o.cpu_limit = std::chrono::seconds(1);
  o.timeout = std::chrono::milliseconds(20000);
  ExpectUnsafe(CheckSpecInChild(Demo(), o), "the check used up its 1 s of CPU time");
}

TEST(IsolatedSpecCheck, AChildThatFailsOrAnswersSomethingElseIsRefused) {
  ExpectUnsafe(CheckSpecInChild(Demo(), Shell("cat >/dev/null; exit 3")),
               "the check exited with status 3");
  ExpectUnsafe(CheckSpecInChild(Demo(), Shell("cat >/dev/null; printf 'parsed\\001!'")),
               "the check answered \"parsed?!\"");
  // It exits without reading 1 MiB of input: the write fails, the caller does not die of SIGPIPE.
  ExpectUnsafe(CheckSpecInChild(std::string(kMaxSpecBytes, 'x'), Shell("exit 0")),
               "the check answered \"\"");
}

TEST(IsolatedSpecCheck, AProgramThatCannotStartIsAnInternalError) {
  SpecCheckOptions o;
  o.argv = {"/nonexistent/belayd", "--check-spec"};
  const absl::Status s = CheckSpecInChild(Demo(), o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("cannot start /nonexistent/belayd"), std::string::npos) << s;
}

}  // namespace
}  // namespace belay

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == belay::kSpecCheckFlag) return belay::RunSpecCheck();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
