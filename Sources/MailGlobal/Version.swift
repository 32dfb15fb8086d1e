// Version: what Swallow reports as mail_version and mail_release_date.

public enum SwallowVersion {
    public static let version = "0.1.0"
    public static let releaseDate = "20261121"
}
