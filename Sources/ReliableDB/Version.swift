/// The library's version, printed by `reliabledb --version`.
public enum ReliableDBVersion {
    public static let current = "0.1.0"
}
