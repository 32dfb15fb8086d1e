// postmap(1): build and query lookup tables; the logic is in PostmapCore.
import PostmapCore

Postmap.main(CommandLine.arguments, alias: false)
