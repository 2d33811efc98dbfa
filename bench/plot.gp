# Plots of an ndchan-bench run, from its results.csv:
#   throughput.{png,svg}  payload throughput vs array size, one line per transport,
#                         the memcpy and rawcopy ceilings dashed in black
#   latency.{png,svg}     round-trip p50 vs array size, one line per transport,
#                         the spin and futex floors as horizontal lines
# ndchan-bench runs this itself; to redraw by hand:
#   gnuplot -e "dir='bench/out'" bench/plot.gp
# Only the main placement is drawn (producer and consumer on different CPUs,
# peer active): the same-core and peer-asleep rows are in the table and CSV.
#
# results.csv columns: 1 kind, 2 transport, 3 variant, 4 bytes, 7 ok,
# 10 gbps_med, 11 gbps_min, 12 gbps_max, 13 p50_us, 14 p50_min_us, 15 p50_max_us

if (!exists("dir")) dir = "bench/out"
if (!exists("title")) title = ""
csv = dir . "/results.csv"
set datafile separator ","

# Transports in the order they appear in the file.
names(kind) = system(sprintf("awk -F, 'NR>1 && $1==\"%s\" && $3==\"\" && $7==1 {print $2}' '%s' | awk '!s[$0]++' | tr '\\n' ' '", kind, csv))
floor_p50(t) = real(system(sprintf("awk -F, 'NR>1 && $1==\"latency\" && $2==\"%s\" && $3==\"\" && $7==1 {print $13; exit}' '%s'", t, csv)) . "0")
tput = names("throughput")
lat = system(sprintf("awk -F, 'NR>1 && $1==\"latency\" && $3==\"\" && $7==1 && $2!=\"spin\" && $2!=\"futex\" {print $2}' '%s' | awk '!s[$0]++' | tr '\\n' ' '", csv))
spin = floor_p50("spin")
futex = floor_p50("futex")

sel(k, t) = (strcol(1) eq k && strcol(2) eq t && strcol(3) eq "" && column(7) == 1)
sizelabel(b) = b >= 2**30 ? sprintf("%.0fG", b / 2**30) : b >= 2**20 ? sprintf("%.0fM", b / 2**20) : b >= 1024 ? sprintf("%.0fK", b / 1024) : sprintf("%.0fB", b)

set logscale xy 2
set logscale y 10
set format y "%g"
set xtics ("8B" 8, "64B" 64, "512B" 512, "4K" 4096, "16K" 16384, "64K" 65536, "256K" 262144, \
           "1M" 2**20, "4M" 2**22, "16M" 2**24, "64M" 2**26, "256M" 2**28, "1G" 2**30)
set grid xtics ytics mytics
set key outside right top
set pointsize 0.8

do for [fmt in "pngcairo svg"] {
    ext = fmt eq "svg" ? "svg" : "png"
    if (fmt eq "svg") { set terminal svg size 1000,600 dynamic noenhanced font "sans,11" } \
    else { set terminal pngcairo size 1000,600 noenhanced font "sans,10" }

    # a run without one kind of row (--parts) draws only the other
    if (words(tput) > 0) {
        set output dir . "/throughput." . ext
        set title "Throughput by array size (float64, median of repetitions)" . title
        set xlabel "array size (bytes)"
        set ylabel "GB/s (1e9 bytes/s), log"
        set xrange [2048:2**31]
        plot for [i=1:words(tput)] csv skip 1 using (sel("throughput", word(tput, i)) ? column(4) : NaN):10 \
             with linespoints lw (substr(word(tput, i), 1, 6) eq "ndchan" ? 2.5 : 1) \
             dt 1+(word(tput, i) eq "memcpy")+2*(word(tput, i) eq "rawcopy") \
             lc (word(tput, i) eq "memcpy" || word(tput, i) eq "rawcopy" ? -1 : i) \
             title (word(tput, i) eq "memcpy" ? "memcpy (in-process ceiling)" : \
                    word(tput, i) eq "rawcopy" ? "rawcopy (cross-core copy ceiling)" : word(tput, i))
    }

    if (words(lat) > 0 || spin > 0 || futex > 0) {
        set output dir . "/latency." . ext
        set title "Round trip by array size: send, receive, send back, receive (p50)" . title
        set ylabel "microseconds, log"
        set xrange [4:2**29]
        plot for [i=1:words(lat)] csv skip 1 using (sel("latency", word(lat, i)) ? column(4) : NaN):13 \
                 with linespoints lw (substr(word(lat, i), 1, 6) eq "ndchan" ? 2.5 : 1) lc i title word(lat, i), \
             (spin > 0 ? spin : NaN) with lines dashtype 2 lc rgb "black" title "spin floor", \
             (futex > 0 ? futex : NaN) with lines dashtype 3 lc rgb "gray40" title "futex floor"
    }
    unset output
}
