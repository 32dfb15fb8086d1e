// Spawn: starting programs with posix_spawn, descriptors at fixed numbers.
// The master's children get fds 3, 4, 5 and 6.. exactly; every other descriptor is closed,
// signal dispositions and the mask are reset. No fork() without exec in a Swift process.
import Glibc
import CShim

public enum Spawn {
    /// Starts `path` with `argv` (argv[0] included) and `environment` ("NAME=value").
    /// `descriptors` maps child fd numbers to parent fds; all other fds are closed in the
    /// child. `newSession` makes the child a session leader. Returns its pid.
    public static func run(_ path: String, argv: [String], environment: [String],
                           descriptors: [Int32: Int32] = [0: 0, 1: 1, 2: 2],
                           newSession: Bool = false) throws -> pid_t {
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        defer { posix_spawn_file_actions_destroy(&fa) }
        // Move every source above every target first, so that dup2 in order cannot clobber a
        // source that happens to equal an earlier target.
        let top = (descriptors.keys.max() ?? 2) + 1
        var moved: [(target: Int32, temp: Int32)] = []
        var temps: [Int32] = []
        defer { temps.forEach { close($0) } }
        for (target, source) in descriptors.sorted(by: { $0.key < $1.key }) {
            let t = fcntl(source, F_DUPFD_CLOEXEC, max(top, 10))
            if t < 0 { throw SystemError.current("dup descriptor \(source)") }
            temps.append(t)
            moved.append((target, t))
        }
        for (target, temp) in moved {
            posix_spawn_file_actions_adddup2(&fa, temp, target)
        }
        cshim_spawn_addclosefrom(&fa, top)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if newSession { flags |= CSHIM_POSIX_SPAWN_SETSID }
        posix_spawnattr_setflags(&attr, flags)

        var cargv: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cenv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer {
            cargv.forEach { free($0) }
            cenv.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &fa, &attr, &cargv, &cenv)
        if rc != 0 { throw SystemError(errno: rc, "spawn \(path)") }
        return pid
    }

    /// The current environment as "NAME=value" strings.
    public static var currentEnvironment: [String] {
        var out: [String] = []
        var p = environ
        while let e = p.pointee {
            out.append(String(cString: e))
            p += 1
        }
        return out
    }
}
