/^a(b)(c)?$/ ab[$1][$2]
!/^x/ notx
if /^i/
/^ij/ in-if
endif
/^(U)pper/i case-sensitive-$1
/bad(/ x
/^q/q bad
/^e\/f/ slash
/^z/
/^(.*)$/ all:${1}
