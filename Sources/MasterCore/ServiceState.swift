// ServiceState: one master.cf service while master runs it: its listen sockets, status
// channel, child processes and timers.
// Mirrors Postfix master/master.h (MASTER_SERV, MASTER_PROC).
import Glibc
import MailUtil
import MailGlobal

/// One child process of a service.
final class ChildProcess {
    let pid: pid_t
    let generation: UInt32
    var available = true
    /// Requests completed (AVAIL after TAKEN); 0 at death means it never got going.
    var useCount = 0
    init(pid: pid_t, generation: UInt32) {
        self.pid = pid
        self.generation = generation
    }
}

final class ServiceState {
    var svc: MasterService
    var listenFDs: [Int32] = []
    /// Master's end of the status socket pair, and the end children get as fd 5.
    var statusMaster: Int32 = -1
    var statusChild: Int32 = -1
    var children: [pid_t: ChildProcess] = [:]
    var availableCount = 0
    var throttled = false
    var throttleTimer: Int?
    var listening = false
    var wakeupTimer: Int?
    /// A conditional ("N?") wakeup timer waits for the first process.
    var wakeupPending = false
    /// Children start with "-o stress=yes" until then (monotonic seconds).
    var stressExpires: Double = 0
    var lastBusyWarning: Double = -10_000

    init(_ svc: MasterService) { self.svc = svc }

    var total: Int { children.count }

    /// Below the process limit (0 = none).
    var limitAllowsOneMore: Bool { svc.maxProcesses == 0 || total < svc.maxProcesses }

    /// Master may add "-o stress=..." and warn about busy periods: a public service.
    var stressCapable: Bool { !svc.localOnly && svc.maxProcesses > 1 }
}
