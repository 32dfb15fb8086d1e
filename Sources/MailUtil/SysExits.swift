// SysExits: the sysexits(3) codes that Postfix's commands exit with.
public enum EX {
    public static let usage: Int32 = 64
    public static let dataErr: Int32 = 65
    public static let noInput: Int32 = 66
    public static let unavailable: Int32 = 69
    public static let software: Int32 = 70
    public static let osErr: Int32 = 71
    public static let ioErr: Int32 = 74
    public static let tempFail: Int32 = 75
    public static let noPerm: Int32 = 77
}
