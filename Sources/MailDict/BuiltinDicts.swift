// BuiltinDicts: the table types this layer implements, registered by name.
// Mirrors the dict_open_info[] table of Postfix util/dict_open.c (3.7 with the Debian
// plugins built in).
enum BuiltinDicts {
    static func registerAll() {
        DictRegistry.register("hash", buildable: true, DictDB.openHash)
        DictRegistry.register("btree", buildable: true, DictDB.openBtree)
        DictRegistry.register("internal", DictHT.open)
        DictRegistry.register("texthash", DictTextHash.open)
        DictRegistry.register("inline", DictInline.open)
        DictRegistry.register("static", DictStatic.open)
        DictRegistry.register("fail", buildable: true, DictFail.open)
        DictRegistry.register("environ", DictEnviron.open)
        DictRegistry.register("unix", DictUnix.open)
        DictRegistry.register("regexp", DictRegexp.open)
        DictRegistry.register("pcre", DictPCRE.open)
        DictRegistry.register("cidr", DictCIDR.open)
        DictRegistry.register("pipemap", DictPipe.open)
        DictRegistry.register("unionmap", DictUnion.open)
        DictRegistry.register("randmap", DictRandom.open)
    }
}
