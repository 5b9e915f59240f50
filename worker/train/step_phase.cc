// Waiting for a collective, on the step's clock.
#include "worker/train/step_phase.h"

#include "worker/train/rank_agreement.h"

namespace belay::train {

void StepProgress::Await(comm::CommHandle& h, std::string_view what) {
  const Phase was = phase.exchange(Phase::kCollective);
  {
    WaitClock clock(wait_s);
    CheckCollective(h.Wait(), what);
  }
  phase.store(was);
}

}  // namespace belay::train
