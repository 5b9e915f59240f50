// The compiled-in Open MPI sandbox settings (scripts/mpi-sandbox.conf) and their parser.
#include "daemon/scheduler/mpi_sandbox.h"

#include <map>

#include "daemon/scheduler/local_scheduler.h"
#include "gtest/gtest.h"

namespace belay::sched {
namespace {

std::map<std::string, std::string> AsMap(const EnvironmentList& env) {
  return {env.begin(), env.end()};
}

TEST(MpiSandbox, OneNodeIsSharedMemoryOnLoopbackAsRootOversubscribed) {
  const std::map<std::string, std::string> want = {
      {"OMPI_ALLOW_RUN_AS_ROOT", "1"},
      {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
      {"OMPI_MCA_btl", "self,vader"},
      {"OMPI_MCA_btl_vader_single_copy_mechanism", "none"},
      {"OMPI_MCA_oob_tcp_if_include", "lo"},
      {"OMPI_MCA_btl_tcp_if_include", "lo"},
      {"OMPI_MCA_rmaps_base_oversubscribe", "1"}};
  EXPECT_EQ(AsMap(MpiSandboxEnvironment(MpiSandbox::kOneNode)), want);
  EXPECT_EQ(AsMap(DefaultMpiEnvironment()), want);
  EXPECT_EQ(MpiSandboxEnvironment(MpiSandbox::kOneNode).size(), want.size());
}

TEST(MpiSandbox, NodesIsTcpOnLoopbackAsRootOversubscribed) {
  const std::map<std::string, std::string> want = {
      {"OMPI_ALLOW_RUN_AS_ROOT", "1"},       {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
      {"OMPI_MCA_btl", "self,tcp"},          {"OMPI_MCA_oob_tcp_if_include", "lo"},
      {"OMPI_MCA_btl_tcp_if_include", "lo"}, {"OMPI_MCA_rmaps_base_oversubscribe", "1"}};
  EXPECT_EQ(AsMap(MpiSandboxEnvironment(MpiSandbox::kNodes)), want);
}

TEST(MpiSandbox, ProfileValuesFollowCommonOnesAndReplaceThem) {
  absl::StatusOr<EnvironmentList> env =
      ParseMpiSandboxConf("# comment\n[common]\n A = 1 \nB=x=y\n\n[p]\nA=2\nC=\n[q]\nD=4", "p");
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(*env, (EnvironmentList{{"A", "2"}, {"B", "x=y"}, {"C", ""}}));
}

TEST(MpiSandbox, MalformedLinesAndUnknownProfilesAreRefused) {
  EXPECT_EQ(ParseMpiSandboxConf("[p]\nA=1\n", "q").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseMpiSandboxConf("[p]\nA=1\n", "common").status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<EnvironmentList> no_equals = ParseMpiSandboxConf("[p]\nA=1\nB\n", "p");
  EXPECT_EQ(no_equals.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_equals.status().message().find("line 3"), std::string::npos) << no_equals.status();
  EXPECT_EQ(ParseMpiSandboxConf("A=1\n[p]\n", "p").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace belay::sched
