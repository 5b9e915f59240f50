// The campaign of the service harnesses' belayd (daemon_world.h), also the seed generator's
// model for submissions: paths relative to the world's directory, where data/train_*.bin,
// data/val_*.bin and ckpt/ exist.
#pragma once

#include <string_view>

namespace belay::fuzz {

inline constexpr std::string_view kWorldSpec = R"([campaign]
name = "fuzz"
[model]
n_layer = 1
n_head = 1
d_model = 8
seq_len = 8
vocab_size = 257
[data]
train = "data/train_*.bin"
val = "data/val_*.bin"
[train]
total_steps = 40
micro_batch = 1
global_batch = 2
lr = 1e-3
eval_every = 4
[checkpoint]
dir = "ckpt"
every_steps = 4
keep_last = 2
[resources]
ranks_per_node = 2
[restart]
max_restarts = 3
max_rollbacks = 2
hang_timeout = "5m"
backoff = { initial = "1s", max = "10s", jitter = 0.0 }
)";

}  // namespace belay::fuzz
