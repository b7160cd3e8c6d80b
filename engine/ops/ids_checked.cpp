// IdsCheckedGuard (engine/ops.h): lets embedding and the cross-entropy ops skip their host-side range check
// inside a sync-free training step, whose ids the trainer checked on the host before uploading them.
#include "engine/ops.h"

namespace tg {

namespace {
bool g_ids_checked = false;
}

IdsCheckedGuard::IdsCheckedGuard() : previous_(g_ids_checked) { g_ids_checked = true; }
IdsCheckedGuard::~IdsCheckedGuard() { g_ids_checked = previous_; }
bool ids_checked_on_host() { return g_ids_checked; }

}  // namespace tg
