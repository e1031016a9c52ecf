set terminal pngcairo noenhanced size 900,600 font 'sans,11'
set output 'wd_transfer.png'
set grid
set key top right
set autoscale fix
set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05
set format x '%.0e'
set logscale x
set xlabel 'weight decay'
set ylabel 'final loss'
plot 'wd_transfer.dat' index 0 with points pt 7 lc 1 title 'width 64', 'wd_transfer_fit.dat' index 0 with lines lc 1 notitle, 'wd_transfer.dat' index 1 with points pt 7 lc 2 title 'width 256', 'wd_transfer_fit.dat' index 1 with lines lc 2 notitle, 'wd_transfer.dat' index 2 with points pt 7 lc 3 title 'width 512', 'wd_transfer_fit.dat' index 2 with lines lc 3 notitle
