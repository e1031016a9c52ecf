#include "trainer/run/preemption.h"

#include <csignal>
#include <initializer_list>

namespace ladder {
namespace {

volatile std::sig_atomic_t received = 0;

extern "C" void on_preemption_signal(int signal) {
  if (received == 0) received = signal;
  std::signal(signal, SIG_DFL);  // a second one of this kind is not caught again
}

}  // namespace

void install_preemption_handlers() {
  for (int signal : {SIGTERM, SIGUSR1}) {
    struct sigaction action {};
    action.sa_handler = on_preemption_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;  // system calls in flight (file writes, MPI) carry on
    sigaction(signal, &action, nullptr);
  }
}

int preemption_signal() {
  return received;
}

const char* signal_name(int signal) {
  switch (signal) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "a signal";
  }
}

}  // namespace ladder
