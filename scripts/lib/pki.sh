# Sourced by scripts that need a throw-away PKI (scripts/demo, perf-lab/sip/run): one CA and
# leaf certificates with chosen SANs and EKUs, made with the openssl CLI (ECDSA P-256).
#   pki_init DIR             the CA: DIR/ca.pem, DIR/ca.key
#   pki_issue DIR NAME CN EKU [SAN...]
#                            DIR/NAME.pem + DIR/NAME.key, SAN DNS:CN plus each SAN given,
#                            EKU e.g. serverAuth or serverAuth,clientAuth
pki_init() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/ca.key" \
    -out "$1/ca.pem" -days 2 -subj "/CN=edgeway test CA" 2>/dev/null
}
pki_issue() {
  local dir=$1 name=$2 cn=$3 eku=$4 sans san
  shift 4
  sans="DNS:$cn"
  for san in "$@"; do sans+=",DNS:$san"; done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/$name.key" \
    -out "$dir/$name.csr" -subj "/CN=$cn" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=%s\n' \
    "$sans" "$eku" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -out "$dir/$name.pem" -extfile "$dir/$name.ext" 2>/dev/null
}
