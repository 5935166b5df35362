#!/bin/sh
# Tiny HTTP/1.1 -> CGI gateway for the test model images (busybox sh).
#
# Started once per TCP connection by `busybox nc -ll -p 8080 -e /bin/serve`
# (stdin/stdout are the socket, stderr is the container's log). It reads one
# request, looks its method and path up in /www/routes ("METHOD /path script"
# per line), runs /www/cgi-bin/<script> as a CGI script (REQUEST_METHOD,
# QUERY_STRING, CONTENT_LENGTH, CONTENT_TYPE, HTTP_* variables; the body on
# stdin; it prints "Status:"/"Content-Type:" headers, a blank line, the body),
# and answers with a Content-Length and "Connection: close".
#
# Why not `busybox httpd`: it runs CGI only for URLs under /cgi-bin/ or ending
# in an interpreter suffix (*.cgi), answers /health with a 302 to /health/ when
# /www/health is a directory, and Debian's build has no reverse proxy (P:), so
# it cannot serve /health or /v2/models/x/infer as CGI.
# busybox ash has $'..' (so no fork for $(printf '\r'))
# shellcheck disable=SC3003
cr=$'\r' tab=$'\t'
tmp=/tmp/serve.$$
trap 'rm -f "$tmp".*' EXIT

respond() { # status content-type body-file: one write, so Nagle never delays it
  {
    printf 'HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
      "$1" "$2" "$(wc -c <"$3")"
    cat "$3"
  } >"$tmp.resp"
  cat "$tmp.resp"
}
fail() { # status message
  printf '{"error": "%s"}\n' "$2" >"$tmp.err"
  respond "$1" application/json "$tmp.err"
  echo "serve: $REQUEST_METHOD $target -> $1" >&2
  exit 0
}

IFS= read -r reqline || exit 0
reqline=${reqline%"$cr"}
set -f
# shellcheck disable=SC2086 # split "METHOD TARGET VERSION" on purpose
set -- $reqline
set +f
REQUEST_METHOD=${1:-}; target=${2:-/}
path=${target%%\?*}
QUERY_STRING=
case $target in *\?*) QUERY_STRING=${target#*\?} ;; esac

# headers -> HTTP_NAME<TAB>value lines (one awk for all of them), then exported
: >"$tmp.hdr"
while IFS= read -r h; do
  h=${h%"$cr"}
  [ -z "$h" ] && break
  printf '%s\n' "$h" >>"$tmp.hdr"
done
awk '{ n = $0; sub(/:.*/, "", n); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
       n = toupper(n); gsub(/[^A-Z0-9]/, "_", n); print "HTTP_" n "\t" v }' "$tmp.hdr" >"$tmp.env"
CONTENT_LENGTH=0
CONTENT_TYPE=
chunked=
expect=
while IFS="$tab" read -r var value; do
  case $var in
    HTTP_CONTENT_LENGTH) CONTENT_LENGTH=$value; continue ;;
    HTTP_CONTENT_TYPE) CONTENT_TYPE=$value; continue ;;
    HTTP_TRANSFER_ENCODING) case $value in *[Cc]hunked*) chunked=1 ;; esac ;;
    HTTP_EXPECT) expect=$value ;;
  esac
  export "$var=$value"
done <"$tmp.env"
export REQUEST_METHOD QUERY_STRING CONTENT_LENGTH CONTENT_TYPE
export REQUEST_URI="$target" SCRIPT_NAME="$path" SERVER_PROTOCOL=HTTP/1.1

case $CONTENT_LENGTH in ''|*[!0-9]*) fail "400 Bad Request" "bad Content-Length" ;; esac
[ -n "$chunked" ] && fail "411 Length Required" "chunked request bodies are not supported; send Content-Length"

script=
allowed=
while read -r m p s; do
  [ "$p" = "$path" ] || continue
  allowed=1
  if [ "$m" = "$REQUEST_METHOD" ]; then script=$s; break; fi
done </www/routes
if [ -z "$script" ]; then
  [ -n "$allowed" ] && fail "405 Method Not Allowed" "method $REQUEST_METHOD not allowed for $path"
  fail "404 Not Found" "no route for $path"
fi

case $expect in 100-[Cc]ontinue) printf 'HTTP/1.1 100 Continue\r\n\r\n' ;; esac
if [ "$CONTENT_LENGTH" -gt 0 ]; then head -c "$CONTENT_LENGTH" >"$tmp.in"; else : >"$tmp.in"; fi
"/www/cgi-bin/$script" <"$tmp.in" >"$tmp.out"

# split the CGI output into headers and body
status="200 OK"
ctype="application/json"
{
  while IFS= read -r h; do
    h=${h%"$cr"}
    [ -z "$h" ] && break
    case $h in
      [Ss]tatus:*) status=${h#*:}; status=${status# } ;;
      [Cc]ontent-[Tt]ype:*) ctype=${h#*:}; ctype=${ctype# } ;;
    esac
  done
  cat >"$tmp.body"
} <"$tmp.out"
respond "$status" "$ctype" "$tmp.body"
echo "serve: $REQUEST_METHOD $target -> ${status%% *}" >&2
