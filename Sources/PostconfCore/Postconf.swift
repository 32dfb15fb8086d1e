// Postconf: the postconf(1) command: shows and edits main.cf and master.cf.
// Mirrors Postfix postconf/postconf.c. Output, warnings and exit codes are Postfix 3.7's;
// warnings that Postfix lists in random hash order come out in its unseeded order.
import Glibc
import MailUtil
import MailGlobal

public enum Postconf {
    public static func main(_ arguments: [String]) -> Int32 {
        umask(0o022)
        openStandardDescriptors()
        let argv0 = arguments.first ?? "postconf"
        Msg.initStderr(tag: argv0)
        Msg.sleepBeforeFatalExit = false

        let cl = OptionParser.parse(Array(arguments.dropFirst()), argv0: argv0)
        Msg.verbose = cl.verbose
        if let dir = cl.configDirectory { setenv(MailConfig.configEnvironment, dir, 1) }
        var mode = cl.mode
        if mode.intersection(.major).isEmpty { mode.insert(.mainParam) }
        if !mode.intersection(Mode.master.union(.mainParam)).isEmpty,
           let first = cl.operands.first, first.contains("=") {
            mode.insert(.editConf)
        }
        mode.checkConflicts()
        if mode.contains(.editConf) && cl.operands.isEmpty {
            Msg.fatal("-e requires name=value argument")
        }
        let classes = cl.classes.map(PostconfState.parseClasses) ?? .all
        let configDirectory = getenv(MailConfig.configEnvironment).map { String(cString: $0) }
            ?? MailConfig.defaultConfigDirectory
        let state = PostconfState(argv0: argv0, mode: mode, configDirectory: configDirectory)
        let ops = cl.operands
        var status: Int32 = 0

        if mode.contains(.expandTemplates) || mode.contains(.dumpTemplates) {
            if ops.count > 1 { Msg.fatal("options -b and -t require at most one template file") }
            state.runBounceTemplates(expand: mode.contains(.expandTemplates), templateFile: ops.first)
        } else if mode.contains(.showMaps) {
            state.showMaps()
        } else if mode.contains(.showLocks) {
            state.showLocks()
        } else if !mode.intersection(Mode.master).isEmpty && mode.intersection(Mode.edits).isEmpty {
            state.readMaster(failOnOpenError: true)
            state.readParameters()
            state.setParameters(cl.overrides)
            state.registerBuiltinParameters()
            state.registerServiceParameters()
            state.registerUserParameters()
            if mode.contains(.masterField) {
                state.showMasterFields(ops)
            } else if mode.contains(.masterParam) {
                state.showMasterParams(ops)
            } else {
                state.showMasterEntries(ops)
            }
            state.flagUnusedMasterParameters()
        } else if mode.contains(.saslServer) {
            state.showSASL(server: true)
        } else if mode.contains(.saslClient) {
            state.showSASL(server: false)
        } else if mode.contains(.showTLS) {
            status = state.showTLS(cl.tlsMode ?? "")
        } else if !mode.intersection(Mode.edits).isEmpty {
            if ops.isEmpty { Msg.fatal("missing service argument") }
            if !mode.intersection(Mode.master).isEmpty {
                state.editMaster(ops)
            } else {
                state.editMain(ops)
            }
        } else {
            if !mode.contains(.showDefs) {
                state.readParameters()
                state.setParameters(cl.overrides)
            }
            state.registerBuiltinParameters()
            state.readMaster(failOnOpenError: false)
            state.registerServiceParameters()
            if !mode.contains(.showDefs) { state.registerUserParameters() }
            state.showParameters(classes: classes, names: ops)
            if !mode.contains(.showDefs) {
                state.flagUnusedMainParameters()
                state.flagUnusedMasterParameters()
            }
        }
        state.out.flush()
        return status
    }
}
