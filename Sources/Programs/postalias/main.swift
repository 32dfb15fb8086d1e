// postalias(1): build and query alias databases; the logic is in PostmapCore.
import PostmapCore

Postmap.main(CommandLine.arguments, alias: true)
