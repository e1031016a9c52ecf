set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'bytes_vs_bpe.png'
set grid
set key top right
set xlabel 'training FLOPs'
set ylabel 'loss (nats/byte)'
set title 'loss against training FLOPs'
set format x '%.1e'
plot 'bytes_vs_bpe.0.eval.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc 1 title 'bytes val', \
     'bytes_vs_bpe.1.eval.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc 2 title 'bpe val', \
     'bytes_vs_bpe.2.eval.dat' using 1:2 with linespoints lw 2 pt 7 ps 0.8 lc 3 title 'bpe-same-text val'
