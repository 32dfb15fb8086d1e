// bounce(8), also defer and trace: delivery status logs and notifications; the logic is in BounceCore.
import BounceCore

Bounce.main(CommandLine.arguments)
