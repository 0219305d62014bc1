import NIOSSL
import ReliableDB

extension PostgresURL {
    /// The TLS settings `sslmode` implies, nil for `disable`: `prefer` and `require` encrypt without
    /// verifying the certificate (libpq's meaning), `verify-full` verifies it against `sslrootcert`
    /// or the system's roots and checks the host name.
    public var tlsSettings: (configuration: TLSConfiguration, required: Bool)? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch sslMode {
        case .disable:
            return nil
        case .prefer, .require:
            configuration.certificateVerification = .none
            return (configuration, sslMode == .require)
        case .verifyFull:
            configuration.certificateVerification = .fullVerification
            if let sslRootCertificate {
                configuration.trustRoots = .file(sslRootCertificate)
            }
            return (configuration, true)
        }
    }
}

extension String {
    /// True for a DNS name, false for an IPv4 or IPv6 literal (TLS SNI takes names only).
    var isHostName: Bool {
        !contains(":") && !allSatisfy { $0.isNumber || $0 == "." }
    }
}
