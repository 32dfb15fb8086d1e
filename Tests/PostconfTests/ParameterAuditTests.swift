// "Did you mean" suggestions for settings nothing uses.
import Testing
import PostconfCore

@Suite struct ParameterAuditTests {
    @Test func closestNames() {
        let known = ["mydomain", "myhostname", "mydestination", "smtpd_recipient_restrictions", "relayhost"]
        #expect(ParameterAudit.closest("mydomian", in: known) == "mydomain")
        #expect(ParameterAudit.closest("smtpd_recipent_restrictions", in: known) == "smtpd_recipient_restrictions")
        #expect(ParameterAudit.closest("relay_host", in: known) == "relayhost")
        #expect(ParameterAudit.closest("completely_different", in: known) == nil)
    }
}
